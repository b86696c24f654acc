"""How a worker cuts its shard into batches, names them, and pads them into tensors.

Batches are a pure function of (shard ids, sample lengths, batch size): after an actor restart
the same shard is cut the same way, so each batch gets the same idempotency key and the service
applies it once. Sorting by length makes batches of similar lengths, so padding (and the
attention spent on it) stays small.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from grace_workers.dataset import TokenDataset

MAX_BATCH_ID_CHARS = 128  # the service's limit on batch ids (grace_proto ScoreBatchRequest)


def plan_batches(
    ids: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], batch_size: int
) -> list[npt.NDArray[np.int64]]:
    """Split `ids` into batches of at most `batch_size`, longest samples first.

    lengths: (N,) tokens per sample of the whole dataset, indexed by id. Ties keep id order
    (a stable sort), so the result is deterministic.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(-lengths[ids], kind="stable")  # (n,) longest first
    ordered = ids[order]
    return [ordered[i : i + batch_size] for i in range(0, ordered.size, batch_size)]


def batch_key(job: str, round_: int, shard: int, of: int, index: int, ids: Sequence[int]) -> str:
    """The idempotency key of one batch: a function of its place in the round and its ids.

    The digest of the ids makes a key unique to its content, so that a rerun with another
    batch size cannot be mistaken for a retry of a batch it does not repeat.
    """
    digest = hashlib.blake2b(np.asarray(ids, dtype="<i8").tobytes(), digest_size=8).hexdigest()
    key = f"{job}:r{round_}:s{shard}of{of}:b{index}:{digest}"
    if len(key) > MAX_BATCH_ID_CHARS - 8:  # leave room for the "/emb", "/scores" suffixes
        raise ValueError(f"batch key {key!r} is too long for the service's 128-character ids")
    return key


def collate(
    dataset: TokenDataset, ids: npt.NDArray[np.int64], max_tokens: int | None, pad_id: int = 0
) -> tuple[Tensor, Tensor]:
    """(input_ids (B, T) int64, attention_mask (B, T) int64), right-padded.

    Each sample is cut to its first `max_tokens` tokens (the model's context). Right padding is
    safe with causal attention: real tokens never look at later positions.
    """
    seqs: list[npt.NDArray[Any]] = [dataset.tokens(int(i))[:max_tokens] for i in ids]
    width = max((len(s) for s in seqs), default=0)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for row, seq in enumerate(seqs):
        input_ids[row, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
        mask[row, : len(seq)] = 1
    return input_ids, mask


def response_mask(dataset: TokenDataset, ids: npt.NDArray[np.int64], width: int) -> Tensor | None:
    """(B, width) int64, 1 on the tokens whose prediction counts (an instruction pair's
    response), for a dataset built with response starts; None for a plain text dataset, where
    every token after the first counts."""
    starts = dataset.target_starts
    if starts is None:
        return None
    first = torch.from_numpy(np.asarray(starts[np.asarray(ids, dtype=np.int64)], dtype=np.int64))
    positions = torch.arange(width, dtype=torch.long)[None, :]  # (1, width)
    return (positions >= first[:, None]).to(torch.long)  # (B, width)

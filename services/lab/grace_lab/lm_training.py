"""The training side of the experiments: batches of token ids, a weighted step, held-out perplexity.

Shared by `grace demo` and `grace_lab.paper_table` so that every method trains and is
evaluated by the same code; only where the sample ids come from differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F


class TokenSource(Protocol):
    """Token ids of sample i; any tokenized dataset with these two methods will do."""

    def __len__(self) -> int: ...

    def tokens(self, i: int) -> npt.NDArray[np.integer]: ...


class LanguageModel(Protocol):
    """The scoring contract of `grace_workers.scoring.CausalLM`: logits = output_layer(hidden)."""

    @property
    def output_layer(self) -> nn.Linear: ...

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor: ...


class TrainableLM(LanguageModel, Protocol):
    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def collate(
    source: TokenSource, ids: Sequence[int] | npt.NDArray[np.int64], block: int, pad_id: int = 0
) -> tuple[Tensor, Tensor]:
    """(input_ids (B, T), attention_mask (B, T)), right-padded, each sample cut to `block`."""
    seqs = [np.asarray(source.tokens(int(i)))[:block] for i in ids]
    width = max(2, max((len(s) for s in seqs), default=2))
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
        mask[row, : len(seq)] = 1
    return input_ids, mask


def token_losses(model: LanguageModel, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(losses (B, T-1), target mask (B, T-1)): next-token cross-entropy, zero on padding."""
    logits = model.output_layer(model.hidden_states(input_ids, mask))  # (B, T, V)
    targets = input_ids[:, 1:]  # (B, T-1)
    target_mask = (mask[:, :-1] * mask[:, 1:]).to(logits.dtype)  # (B, T-1)
    losses = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)  # (B, T-1)
    return losses * target_mask, target_mask


def train_step(
    model: TrainableLM,
    optimizer: torch.optim.Optimizer,
    input_ids: Tensor,
    mask: Tensor,
    weights: Tensor | None = None,
    clip: float = 1.0,
    token_mean: bool = False,
) -> Tensor:
    """One optimiser step on the (optionally weighted) mean of per-sample losses.

    token_mean: average over the batch's predicted tokens instead (each sample counts by its
        length), the usual causal-LM loss and what token-weighted perplexity measures; a
        sample's weight then multiplies each of its tokens.
    Returns each sample's mean token loss (B,), detached: the free signal trainers report.
    """
    model.train()
    losses, target_mask = token_losses(model, input_ids, mask)
    counts = target_mask.sum(dim=1)  # (B,)
    per_sample = losses.sum(dim=1) / counts.clamp(min=1)  # (B,)
    w = torch.ones_like(per_sample) if weights is None else weights.to(per_sample.dtype)
    if token_mean:
        w = w * counts
    loss = (per_sample * w).sum() / w.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    if clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return per_sample.detach()


@dataclass(frozen=True, slots=True)
class Perplexity:
    """Token-weighted held-out perplexity, overall and per stratum (name -> ppl)."""

    overall: float
    by_stratum: dict[str, float]

    @property
    def worst(self) -> float:
        return max(self.by_stratum.values()) if self.by_stratum else self.overall


@torch.no_grad()
def evaluate_perplexity(
    model: TrainableLM,
    source: TokenSource,
    strata: npt.NDArray[np.integer],
    names: Sequence[str],
    block: int,
    batch_size: int = 128,
) -> Perplexity:
    """exp(mean token loss) over every sample of `source`, and within each stratum."""
    model.eval()
    loss_sum = np.zeros(len(names))
    token_count = np.zeros(len(names))
    for start in range(0, len(source), batch_size):
        ids = np.arange(start, min(start + batch_size, len(source)))
        input_ids, mask = collate(source, ids, block)
        losses, target_mask = token_losses(model, input_ids, mask)
        np.add.at(loss_sum, strata[ids], losses.sum(dim=1).numpy())
        np.add.at(token_count, strata[ids], target_mask.sum(dim=1).numpy())
    overall = math.exp(loss_sum.sum() / max(token_count.sum(), 1))
    by_stratum = {
        name: math.exp(loss_sum[s] / token_count[s])
        for s, name in enumerate(names)
        if token_count[s] > 0
    }
    return Perplexity(overall, by_stratum)


def make_optimizer(model: TrainableLM, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95)
    )


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of peak: the same schedule for every method."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

"""A round's CRAIG-style weights for a batch, and the weighted loss they call for.

A weighted round gives each coreset member w_c, the number of samples it stands for (the
weights of a round sum to N). Training on the coreset estimates the full-data loss when a
batch's loss is sum_c(w_c * loss_c) / sum_c(w_c). Normalising within the batch keeps the
loss on the scale of a plain mean, so learning rates and clipping need no retuning, and it
is what the lab's training loop measured (grace_lab.lm_training.train_step).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from grace_client.payloads import IndexSlice


def ids_array(ids: Any) -> npt.NDArray[np.int64]:
    """(B,) int64 from a list, an array or a tensor on any device."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def lookup_weights(ids: Any, pieces: Iterable[IndexSlice | None]) -> npt.NDArray[np.float32] | None:
    """Each id's weight in the first piece that holds it (1.0 where none does), or None
    when no piece carries weights."""
    wanted = ids_array(ids)
    out = np.ones(wanted.shape[0], dtype=np.float32)
    found = np.zeros(wanted.shape[0], dtype=bool)
    any_weights = False
    for piece in pieces:
        if piece is None or piece.weights is None or len(piece) == 0:
            continue
        any_weights = True
        order = np.argsort(piece.indices, kind="stable")
        sorted_ids = piece.indices[order]
        pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
        hit = ~found & (sorted_ids[pos] == wanted)
        out[hit] = piece.weights[order[pos[hit]]]
        found |= hit
    return out if any_weights else None


def normalized_weights(
    weights: npt.NDArray[np.float32] | None, like: torch.Tensor
) -> torch.Tensor | None:
    """Weights as a tensor like `like` (device, float dtype), scaled to mean 1; None stays.

    Scaled on the host before the copy, so that the step never waits on the device.
    """
    if weights is None:
        return None
    if weights.shape[0] != like.shape[0]:
        raise ValueError(
            f"losses: {like.shape[0]} per-sample losses for {weights.shape[0]} ids; pass one "
            "loss per id (reduction='none'), in the order of the ids"
        )
    total = float(weights.sum(dtype=np.float64))
    scaled = weights * (weights.shape[0] / total) if total > 0 else np.ones_like(weights)
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return torch.as_tensor(scaled, dtype=dtype, device=like.device)


def weighted_mean(losses: torch.Tensor, weights: npt.NDArray[np.float32] | None) -> torch.Tensor:
    """sum(w * losses) / sum(w) over the batch, a scalar with grad; the mean when unweighted."""
    flat = losses.reshape(-1)
    scaled = normalized_weights(weights, flat)
    return flat.mean() if scaled is None else (flat * scaled).mean()

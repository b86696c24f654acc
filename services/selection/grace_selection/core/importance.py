"""Per-sample utility for the selectors: rank-normalised importance and loss, plus a noise guard.

Raw gradient norms and losses live on scales that drift from round to round and differ
between models, so the selectors never see them: they see ranks in (0, 1]. A rank survives
a change of model scale and keeps one outlier from flattening everyone else.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from grace_selection.core.config import SelectionConfig
from grace_selection.core.scores import ScoreTable

NEUTRAL_RANK = 0.5
"""The rank a never-scored sample gets: the middle of the scale, i.e. the expected rank of a
sample we know nothing about. It neither wins nor loses a selection by default."""


def normalize_importance(values: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Rank-normalise a score vector to (0, 1]: the largest known value maps to 1.

    values: (N,) any real dtype; NaN means unknown and stays NaN in the output.
    Ties share their average rank, so equal scores always get equal utility. The smallest
    of m known values maps to 1/m (or more, if tied), never to 0. float32 keeps neighbouring
    ranks distinct up to about 16M known values; beyond that, near neighbours may round together.
    Returns (N,) float32.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"values must be a 1-D array, got shape {arr.shape}")
    out = np.full(arr.shape, np.nan, dtype=np.float64)
    known = ~np.isnan(arr)
    m = int(known.sum())
    if m == 0:
        return out.astype(np.float32)
    # np.unique sorts; a tie group occupying sorted positions a..a+c-1 has 1-based ranks
    # a+1..a+c, whose average is a + (c + 1) / 2.
    _, inverse, counts = np.unique(arr[known], return_inverse=True, return_counts=True)
    group_start = np.cumsum(counts) - counts
    average_rank = group_start + (counts + 1) / 2.0
    out[known] = average_rank[inverse] / m
    return out.astype(np.float32)


def guard_noise(importance: npt.ArrayLike, fraction: float) -> npt.NDArray[np.bool_]:
    """CCS-style noise guard: False for the top `fraction` of known importance, True elsewhere.

    The very highest gradient norms are disproportionately mislabeled or corrupted samples,
    so they are kept out of the candidate pool. floor(fraction * m) of the m scored samples
    are dropped (never more than asked); among equal importance the lower id is dropped first.
    Never-scored samples (NaN) are always eligible.
    Returns (N,) bool.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    arr = np.asarray(importance, dtype=np.float64)
    eligible = np.ones(arr.shape, dtype=np.bool_)
    known = np.flatnonzero(~np.isnan(arr))
    drop = math.floor(fraction * known.size)
    if drop == 0:
        return eligible
    # Descending importance, ascending id on ties: lexsort's last key is the primary one.
    order = known[np.lexsort((known, -arr[known]))]
    eligible[order[:drop]] = False
    return eligible


def combine_scores(
    scores: ScoreTable, config: SelectionConfig
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """The utility each selector maximises, and who may be picked.

    utility = alpha * rank(importance) + (1 - alpha) * rank(loss), alpha =
    config.importance_weight, each rank from `normalize_importance`; an unknown importance or
    loss (NaN) counts as config.unscored_rank (NEUTRAL_RANK by default; 1 is optimism: a
    sample nothing is known about ranks with the most important, so unseen data is tried
    first). So utility is in (0, 1] and finite everywhere.
    eligible = `guard_noise(importance, config.noise_guard_fraction)`.
    Returns utility (N,) float32 and eligible (N,) bool.
    """
    alpha = float(config.importance_weight)
    unknown = float(config.unscored_rank)
    importance_rank = np.nan_to_num(normalize_importance(scores.importance), nan=unknown)
    loss_rank = np.nan_to_num(normalize_importance(scores.loss), nan=unknown)
    utility = alpha * importance_rank.astype(np.float64) + (1.0 - alpha) * loss_rank
    eligible = guard_noise(scores.importance, config.noise_guard_fraction)
    return utility.astype(np.float32), eligible


def readmit_guarded(
    eligible: npt.NDArray[np.bool_], importance: npt.NDArray[np.float32], budget: int
) -> npt.NDArray[np.bool_]:
    """Eligibility with enough candidates for `budget`: if the guard left too few, the guarded
    samples with the lowest importance (the least suspicious) come back first.

    The budget is a promise to the trainer; the guard is a preference. Returns a new mask.
    """
    missing = budget - int(eligible.sum())
    if missing <= 0:
        return eligible
    guarded = np.flatnonzero(~eligible)
    if missing > guarded.size:
        raise ValueError(f"budget {budget} exceeds the {eligible.size} samples available")
    values = np.nan_to_num(importance[guarded].astype(np.float64), nan=-np.inf)
    back = guarded[np.lexsort((guarded, values))[:missing]]
    out = eligible.copy()
    out[back] = True
    return out

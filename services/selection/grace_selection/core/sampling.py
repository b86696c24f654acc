"""Importance sampling: draw the coreset at random, each sample in proportion to its utility.

A hard top-k of importance (or a diversity greedy) picks the same kind of sample again and
again; under a tight compute budget, where nearly every sample still teaches something, that
loses to a plain random draw. Sampling keeps random's coverage and tilts it:

    P(i) proportional to u_i ** power,   u = the rank-normalised utility in (0, 1],

drawn without replacement by Gumbel top-k (the k largest of power * log u_i + G_i, G_i
standard Gumbel, are an exact draw without replacement of that distribution). power = 0 is a
uniform random draw; a large power approaches the top-k. Never-scored samples have the neutral
utility, so they are drawn like a median sample: unseen data keeps being explored.

Randomness comes only from `rng`; select_coreset seeds it with (job seed, round), so each round
draws afresh and the same inputs give the same coreset.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.budget import check_selector_args
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph


def select_by_importance_sampling(
    graph: KnnGraph,
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    budget: int,
    config: SelectionConfig,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """`budget` distinct eligible ids, in draw order: (budget,) int64."""
    check_selector_args(graph, utility, eligible, budget)
    pool = np.flatnonzero(eligible).astype(np.int64)
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    # utility is in (0, 1] (rank-normalised), so its log is finite.
    keys = config.sampling_power * np.log(utility[pool].astype(np.float64))
    keys += rng.gumbel(size=pool.shape[0])
    top = (
        np.argpartition(-keys, budget - 1)[:budget]
        if budget < pool.shape[0]
        else np.arange(pool.shape[0])
    )
    ordered = top[np.argsort(-keys[top], kind="stable")]
    picks: npt.NDArray[np.int64] = pool[ordered]
    return picks

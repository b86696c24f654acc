"""Importance-weighted sparse facility location, maximised by batched stochastic greedy.

F(S) = sum_i max_{c in S} W[c, i] + lambda * sum_{c in S} s_c, with W the k-NN graph used in
both directions (`similarity.build_sparse_similarity`) and s the utility. The first term
rewards covering every region of the data, the second rewards important picks.

Stochastic greedy (Mirzasoleiman et al., 2015) adds, at each step, the best of
R = (n / K) * ln(1 / epsilon) candidates drawn uniformly from the unpicked pool, which keeps
a (1 - 1/e - epsilon) guarantee in expectation at a fraction of greedy's cost. We run many
steps at once: a round draws B independent groups of R candidates, scores them all against the
current coverage in one vectorised pass, and takes each group's best. A group's best only
joins if its CSR row shares no column with the best of an earlier group in the round; then no
earlier pick changed its gain, the other candidates' gains could only fall (submodularity),
so it is exactly what the sequential stochastic greedy would have taken from that group.
Rejected groups are simply drawn again next round. The result is a genuine stochastic greedy
run; batching changes the cost, not the algorithm.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from grace_selection.core.budget import check_selector_args
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.similarity import SparseSimilarity, build_sparse_similarity

# Groups per round = N / (_OVERLAP_FACTOR * d^2), d the mean row length: a pick's two-hop
# neighbourhood has about d^2 samples, so a pick then meets an earlier one of its round with
# probability about 1 / (2 * _OVERLAP_FACTOR). Measured at N = 1M: factors 2, 4, 8 took 70,
# 121, 223 rounds with the same objective to 0.1%; 4 balances round overhead and rejections.
_OVERLAP_FACTOR = 4.0


def select_facility_location(
    graph: KnnGraph,
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    budget: int,
    config: SelectionConfig,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """`budget` distinct eligible sample ids maximising F (lambda = config.diversity_weight),
    in the order they were picked: (budget,) int64."""
    check_selector_args(graph, utility, eligible, budget)
    pool = np.flatnonzero(eligible)
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    if budget == pool.shape[0]:
        return pool.astype(np.int64)
    similarity = build_sparse_similarity(graph)
    return maximize_facility_location(
        similarity,
        utility,
        eligible,
        budget,
        importance_weight=config.diversity_weight,
        epsilon=config.stochastic_epsilon,
        rng=rng,
    )


def maximize_facility_location(
    similarity: SparseSimilarity,
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    budget: int,
    *,
    importance_weight: float,
    epsilon: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """Batched stochastic greedy over a prebuilt similarity (see the module docstring)."""
    n = similarity.n
    available = eligible.copy()
    sample = _sample_size(int(available.sum()), budget, epsilon)
    groups_per_round = max(1, int(n / (_OVERLAP_FACTOR * (similarity.nnz / n) ** 2)))
    cover = np.zeros(n, dtype=np.float64)
    bonus = importance_weight * utility.astype(np.float64)
    no_owner = np.iinfo(np.int64).max
    owner = np.full(n, no_owner, dtype=np.int64)
    picked: list[npt.NDArray[np.int64]] = []
    count = 0
    while count < budget:
        pool = np.flatnonzero(available)
        if sample >= pool.shape[0]:
            # The sample would be the whole pool: one exact greedy step.
            candidates = pool.astype(np.int64)[None, :]  # (1, P)
        else:
            groups = min(budget - count, groups_per_round)
            draws = rng.integers(0, pool.shape[0], size=(groups, sample))
            candidates = pool.astype(np.int64)[draws]  # (B, R)
        gains = _gains(similarity, cover, candidates.ravel()) + bonus[candidates.ravel()]
        best_col = gains.reshape(candidates.shape).argmax(axis=1)
        best = candidates[np.arange(candidates.shape[0]), best_col]  # (B,)

        positions, group = similarity.row_entries(best)
        touched = similarity.cols[positions]
        np.minimum.at(owner, touched, group)
        clash = np.zeros(best.shape[0], dtype=np.bool_)
        clash[group[owner[touched] < group]] = True
        owner[touched] = no_owner
        # Accepted rows are disjoint, so a plain fancy-indexed maximum is race-free.
        take = ~clash[group]
        cover[touched[take]] = np.maximum(cover[touched[take]], similarity.vals[positions[take]])
        accepted = best[~clash]
        available[accepted] = False
        picked.append(accepted)
        count += accepted.shape[0]
    return np.concatenate(picked)


def facility_location_objective(
    similarity: SparseSimilarity,
    utility: npt.NDArray[np.float32],
    picks: npt.ArrayLike,
    importance_weight: float,
) -> float:
    """F(S) for the selection `picks` (duplicates count once)."""
    chosen = np.unique(np.asarray(picks, dtype=np.int64))
    cover = similarity.coverage(chosen)
    return float(cover.sum() + importance_weight * utility[chosen].astype(np.float64).sum())


def _sample_size(pool: int, budget: int, epsilon: float) -> int:
    """R = ceil((n / K) * ln(1 / epsilon)), at least 1 (epsilon = 1 gives random picks)."""
    return max(1, math.ceil(pool / budget * math.log(1.0 / epsilon)))


def _gains(
    similarity: SparseSimilarity, cover: npt.NDArray[np.float64], candidates: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Coverage gain of adding each candidate alone: sum over its row of max(W - cover, 0)."""
    positions, owner = similarity.row_entries(candidates)
    lift = np.maximum(similarity.vals[positions] - cover[similarity.cols[positions]], 0.0)
    gains = np.bincount(owner, weights=lift, minlength=candidates.shape[0])
    return gains.astype(np.float64, copy=False)

"""The rescore planner: which samples the workers score with the newest model next round.

Scoring every sample every round costs a full pass over the data; GRACE scores about rho * N and
estimates the rest along the k-NN graph (`grace_selection.core.estimation`). The plan mixes

1. samples never scored, first: nothing is known about them, so no estimate can stand in;
2. a priority part, the samples whose value is most likely wrong now:
   priority_i = (age_i + 1) * (1 + |s_i - mean_j s_j| / mean s), where age_i is the rounds since
   i was scored, mean_j runs over i's k-NN neighbours and mean s over all samples. Old scores
   drift with the model, and a score that disagrees with its neighbourhood is either a real
   outlier or a bad estimate; both are worth a fresh look;
3. a uniform random part from the rest, so that every sample is re-scored now and then and the
   estimates are checked against an unbiased sample.

Never-scored samples count towards the priority part (they are its highest priority).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import estimation_kernels, numba_enabled
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.scores import NEVER_SCORED

# Rows the compiled neighbour sums add up as numpy does (see estimation._COMPILED_MAX_K).
_COMPILED_MAX_K = 128

IdArray = npt.NDArray[np.int64]


def plan_rescore(
    graph: KnnGraph,
    importance: npt.ArrayLike,
    scored_round: npt.ArrayLike,
    current_round: int,
    config: SelectionConfig,
    rng: np.random.Generator | int,
) -> IdArray:
    """Sorted unique int64 ids, exactly min(N, round(rho * N)) of them (rho: rescore_fraction).

    importance: (N,) the current vector (fresh and estimated); NaN where unknown.
    scored_round: (N,) int, the round whose model last scored each sample; NEVER_SCORED (-1) if
        none. current_round: the round being computed; ages are current_round - scored_round.
    rng: a Generator or a seed; the same inputs and seed give the same plan.
    """
    n = graph.n
    scores = np.asarray(importance, dtype=np.float64)
    rounds = np.asarray(scored_round)
    if scores.shape != (n,):
        raise ValueError(f"importance: must have shape ({n},) like the graph, got {scores.shape}")
    if rounds.shape != (n,) or not np.issubdtype(rounds.dtype, np.integer):
        raise ValueError(
            f"scored_round: must be an integer array of shape ({n},), got "
            f"{rounds.dtype} {rounds.shape}"
        )
    if rounds.size and int(rounds.max()) > current_round:
        raise ValueError(
            f"scored_round: holds round {int(rounds.max())}, later than current_round "
            f"{current_round}; pass the round being computed as current_round"
        )
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    total = min(n, round(config.rescore_fraction * n))
    never = np.flatnonzero(rounds <= NEVER_SCORED)
    if never.size >= total:
        return np.sort(generator.choice(never, size=total, replace=False)).astype(np.int64)

    wanted_priority = round(config.rescore_priority_fraction * total)
    n_priority = max(0, wanted_priority - never.size)
    n_uniform = total - never.size - n_priority

    taken = np.zeros(n, dtype=np.bool_)
    taken[never] = True
    priority = compute_rescore_priority(graph, scores, rounds, current_round)
    if n_priority:
        # A random order first, so that ties at the cut are broken by the seed, not by id.
        order = generator.permutation(np.flatnonzero(~taken))
        ranked = priority[order]
        top = np.argpartition(-ranked, n_priority - 1)[:n_priority]
        taken[order[top]] = True
    if n_uniform:
        rest = np.flatnonzero(~taken)
        taken[generator.choice(rest, size=n_uniform, replace=False)] = True
    return np.flatnonzero(taken).astype(np.int64)


def compute_rescore_priority(
    graph: KnnGraph,
    importance: npt.NDArray[np.float64],
    scored_round: npt.NDArray[np.integer],
    current_round: int,
) -> npt.NDArray[np.float64]:
    """(N,) priority = (age + 1) * (1 + |s_i - mean of neighbours' s| / mean s); +inf if never
    scored. Unknown scores (NaN) add no disagreement; a row without known neighbours neither."""
    age = (current_round - scored_round).astype(np.float64)
    known = np.isfinite(importance)
    values = np.where(known, importance, 0.0)
    compiled = values.dtype == np.float64 and graph.neighbors.shape[1] <= _COMPILED_MAX_K
    if compiled and numba_enabled():
        # The same sums and counts in one pass (estimation_kernels), without (N, k) temporaries.
        neighbour_sum, count = estimation_kernels().neighbour_sums(
            np.ascontiguousarray(graph.neighbors, dtype=np.int32), values, known
        )
    else:
        real = graph.neighbors != NO_NEIGHBOR
        nbr = np.where(real, graph.neighbors, 0)  # (N, k) padding gathers row 0, masked below
        valid = real & known[nbr]
        count = valid.sum(axis=1)
        neighbour_sum = np.where(valid, values[nbr], 0.0).sum(axis=1)
    neighbour_mean = np.divide(
        neighbour_sum, count, out=np.zeros_like(neighbour_sum), where=count > 0
    )
    scale = float(np.abs(values[known]).mean()) if known.any() else 0.0
    # An all-zero vector has no disagreement to scale; 1 keeps the division finite.
    scale = scale if scale > 0 else 1.0
    disagreement = np.where(known & (count > 0), np.abs(values - neighbour_mean) / scale, 0.0)
    priority = (age + 1.0) * (1.0 + disagreement)
    priority[scored_round <= NEVER_SCORED] = np.inf
    return priority

"""Graph message passing selection (D2-Pruning style: Maharana et al., 2023).

Forward: every sample gathers its neighbours' utility, discounted by distance,
    g_i = s_i + sum_{j in N(i)} exp(-gamma * d_ij) * s_j,   d_ij = 1 - sim_ij,
so a sample scores high when it is important *and* sits in an important region.
Reverse: greedily pick the highest g; then the picked sample i pushes its k neighbours down,
    g_j -= diversity_weight * exp(-gamma * d_ij) * max(g_i, 0),
so that the next picks come from other regions. A picked sample never raises a neighbour
(hence the max with 0), so scores only fall, which is what makes a lazy heap exact: a stale
heap entry can only overstate a score, and an entry popped with its current score is the max.

Cost: O(N k) for the forward pass, O(N log N) for one sort, then O(K k log K) heap work,
not the O(N K) of a rescan per pick. The reverse pass runs compiled when numba is installed
(`acceleration`), else as the Python loop below; both give the same picks.
"""

from __future__ import annotations

import heapq

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import kernels, numba_enabled
from grace_selection.core.budget import check_selector_args
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph


def select_graph_message_passing(
    graph: KnnGraph,
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    budget: int,
    config: SelectionConfig,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """`budget` distinct eligible sample ids in pick order: (budget,) int64.

    Deterministic: `rng` is accepted for the common selector signature and not used. Among
    equal scores the lower id is picked first.
    """
    check_selector_args(graph, utility, eligible, budget)
    scores, push = forward_scores(graph, utility, config.gamma)
    return pick_with_down_weighting(
        graph.neighbors, config.diversity_weight * push, scores, eligible, budget
    )


def forward_scores(
    graph: KnnGraph, utility: npt.NDArray[np.float32], gamma: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """g (N,) float64 after the forward pass, and the edge weights exp(-gamma d) (N, k) float64
    (0 on padding)."""
    valid = graph.valid
    # exp(-gamma * (1 - sim)) computed in place: at N = 1M each (N, k) float64 temporary is
    # 80 MB, and the same operations in the same order give the same bits.
    weights = graph.similarities.astype(np.float64)
    np.subtract(1.0, weights, out=weights)
    np.multiply(-gamma, weights, out=weights)
    np.exp(weights, out=weights)
    weights[~valid] = 0.0
    s = utility.astype(np.float64)
    neighbor_utility = s[np.where(valid, graph.neighbors, 0)]  # (N, k), padding masked by weight 0
    np.multiply(weights, neighbor_utility, out=neighbor_utility)
    return s + neighbor_utility.sum(axis=1), weights


def pick_with_down_weighting(
    neighbors: npt.NDArray[np.int32],
    push_weights: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    budget: int,
) -> npt.NDArray[np.int64]:
    """The greedy reverse pass: pick the max, then g_j -= push_weights[i, t] * max(g_i, 0) for each
    neighbour j = neighbors[i, t]. Returns the picks in order, (budget,) int64.

    Compiled (`kernels.pick_with_down_weighting`) when numba is enabled, else the Python loop;
    both give the same picks.
    """
    if numba_enabled():
        picks: npt.NDArray[np.int64] = kernels().pick_with_down_weighting(
            np.ascontiguousarray(neighbors, dtype=np.int32),
            np.ascontiguousarray(push_weights, dtype=np.float64),
            np.ascontiguousarray(scores, dtype=np.float64),
            np.ascontiguousarray(eligible, dtype=np.bool_),
            int(budget),
        )
        return picks
    return _pick_with_down_weighting_python(neighbors, push_weights, scores, eligible, budget)


def _pick_with_down_weighting_python(
    neighbors: npt.NDArray[np.int32],
    push_weights: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    budget: int,
) -> npt.NDArray[np.int64]:
    """The reverse pass as a Python loop over a heapq.

    The heap holds only samples that could still be the max: candidates are admitted in
    descending order of their forward score, an upper bound of their current score, as soon
    as that bound reaches the heap top, and enter with their current score (one stale pop
    fewer for those already pushed down). So the heap stays far below N entries.
    """
    candidates = np.flatnonzero(eligible)
    order = candidates[np.lexsort((candidates, -scores[candidates]))]  # by score desc, id asc
    # Heap entries are (-score, id): heapq is a min-heap, so the top is the highest score and,
    # among equal scores, the lowest id. Python floats are the same IEEE doubles, faster to
    # touch one at a time than numpy scalars.
    bound = (-scores[order]).tolist()
    ids = order.tolist()
    negated = (-scores).tolist()  # the current -g of every sample
    heap: list[tuple[float, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    admitted, total = 0, len(ids)
    picks: list[int] = []
    while len(picks) < budget:
        while admitted < total and (not heap or (bound[admitted], ids[admitted]) < heap[0]):
            push(heap, (negated[ids[admitted]], ids[admitted]))
            admitted += 1
        key, i = pop(heap)
        if key != negated[i]:
            push(heap, (negated[i], i))  # stale: its score fell since it was pushed
            continue
        picks.append(i)
        score = -key
        if score > 0:
            for j, strength in zip(neighbors[i].tolist(), push_weights[i].tolist(), strict=True):
                if j != NO_NEIGHBOR:
                    negated[j] += strength * score
    return np.asarray(picks, dtype=np.int64)

"""Split a selection into independent per-stratum problems.

A stratum (data source, language, class) gets its own budget and is selected on its own
induced subgraph: only edges between two of its members count, so a pick never "covers" or
down-weights a sample of another stratum, and its weight counts only its own stratum's samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grace_selection.core.budget import split_budget
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph


@dataclass(frozen=True, slots=True, eq=False)
class StratumPart:
    """One selection problem: `members` (sorted global ids, (M,) int64), their induced `graph`
    in local ids 0..M-1, and how many of them to pick. `stratum` is None without strata."""

    stratum: int | None
    members: npt.NDArray[np.int64]
    graph: KnnGraph
    budget: int


def partition_by_stratum(
    graph: KnnGraph,
    stratum: npt.NDArray[np.int32] | None,
    budget: int,
    shares: Mapping[int, float] | None,
) -> list[StratumPart]:
    """The parts to select, in increasing stratum id; strata whose budget is 0 are left out.

    Without a stratum tag the whole graph is one part (no copy). Budgets come from
    `split_budget` (proportional to stratum sizes, or `shares`).
    """
    n = graph.n
    if stratum is None:
        return [StratumPart(None, np.arange(n, dtype=np.int64), graph, budget)]
    # Tags may be sparse (e.g. 7 and 10**9); work on their positions 0..S-1 in sorted order.
    tags, group = np.unique(stratum, return_inverse=True)
    sizes = np.bincount(group, minlength=tags.shape[0]).astype(np.int64)
    by_position = (
        None if shares is None else {i: shares.get(int(t), 0.0) for i, t in enumerate(tags)}
    )
    budgets = split_budget(budget, sizes, by_position)
    order = np.argsort(group, kind="stable").astype(np.int64)  # members ascending per stratum
    first = np.cumsum(sizes) - sizes
    local_id = np.empty(n, dtype=np.int64)
    local_id[order] = np.arange(n, dtype=np.int64) - first[group[order]]

    nb = graph.neighbors
    safe = np.where(nb != NO_NEIGHBOR, nb, 0)
    same = (nb != NO_NEIGHBOR) & (group[safe] == group[:, None])  # (N, k)
    local_nb = np.where(same, local_id[safe], NO_NEIGHBOR).astype(np.int32)
    local_sim = np.where(same, graph.similarities, np.float32(0.0)).astype(np.float32)

    parts: list[StratumPart] = []
    for s in np.flatnonzero(budgets):
        members = order[first[s] : first[s] + sizes[s]]
        sub = KnnGraph(local_nb[members], local_sim[members])
        parts.append(StratumPart(int(tags[s]), members, sub, int(budgets[s])))
    return parts

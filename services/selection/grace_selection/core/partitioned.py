"""Selection and k-NN search split over shards: the pure parts of the sharded round.

RandGreeDi (Barbosa et al., 2015; GreeDi, Mirzasoleiman et al., 2013): split the samples into
m parts uniformly at random, run the greedy on each part alone, run it again over the union of
the parts' picks, and keep the better of that merge and the best single part. For a monotone
submodular objective this is a constant-factor approximation in expectation, and in practice it
lands within a percent or two of the one-machine greedy.

Here each part's greedy sees only its own samples and their neighbours inside the part (the
"decomposable" variant of GreeDi: a random part is a 1/m subsample of the same distribution, so
its own k-NN graph stands in for the global one). The merge round and the final comparison use
the global k-NN graph, which the shards' fanned-out queries produce (`merge_neighbor_lists`).

Everything here is numpy; the adapter that runs the parts on Ray lives in adapters/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grace_selection.core.config import SelectionConfig
from grace_selection.core.facility_location import facility_location_objective
from grace_selection.core.graph import KnnGraph
from grace_selection.core.selectors import SELECTORS
from grace_selection.core.similarity import build_sparse_similarity


@dataclass(frozen=True, slots=True)
class MergedSelection:
    """The outcome of RandGreeDi's merge round.

    picks: the kept selection, ascending sample ids (budget,) int64.
    source: "merge" when the greedy over the union won, else "part <p>".
    objective: F of the kept selection on the global graph; part_objectives: F of each part's.
    """

    picks: npt.NDArray[np.int64]
    source: str
    objective: float
    merge_objective: float
    part_objectives: tuple[float, ...]


def partition_randomly(n: int, parts: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """Sample ids 0..n-1 split uniformly at random into `parts` near-equal parts, each sorted."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if n < parts:
        raise ValueError(f"cannot split {n} samples into {parts} non-empty parts")
    order = rng.permutation(n)
    return [np.sort(chunk).astype(np.int64) for chunk in np.array_split(order, parts)]


def part_budget(budget: int, part_size: int) -> int:
    """RandGreeDi gives every part the whole budget (capped by the part's size)."""
    return min(budget, part_size)


def merge_neighbor_lists(
    ids: Sequence[npt.NDArray[np.int64]], sims: Sequence[npt.NDArray[np.float32]], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The k best of each row over the shards' own top lists, best first.

    ids[s], sims[s]: shard s's answer, each (n, k_s), -1 / -inf pad. Shards hold disjoint ids,
    so a row never sees an id twice. Returns (n, k) int64 ids and float32 similarities.
    """
    all_ids = np.concatenate(list(ids), axis=1)  # (n, sum k_s)
    all_sims = np.concatenate(list(sims), axis=1)
    take = min(k, all_ids.shape[1])
    top = np.argpartition(-all_sims, take - 1, axis=1)[:, :take]
    top_sims = np.take_along_axis(all_sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1, kind="stable")
    out_ids = np.take_along_axis(np.take_along_axis(all_ids, top, axis=1), order, axis=1)
    out_sims = np.take_along_axis(top_sims, order, axis=1).astype(np.float32)
    out_ids[~np.isfinite(out_sims)] = -1
    if take < k:
        out_ids = np.pad(out_ids, ((0, 0), (0, k - take)), constant_values=-1)
        out_sims = np.pad(out_sims, ((0, 0), (0, k - take)), constant_values=-np.inf)
    return out_ids.astype(np.int64), out_sims


def select_part(
    graph: KnnGraph,
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    budget: int,
    config: SelectionConfig,
    seed: int,
    part: int,
) -> npt.NDArray[np.int64]:
    """One part's greedy on its own graph (local ids): (min(budget, eligible),) int64, sorted.

    Each part draws from its own stream np.random.default_rng([seed, part]), so the outcome does
    not depend on which worker runs which part or in what order.
    """
    take = min(budget, int(eligible.sum()))
    rng = np.random.default_rng([seed, part])
    picks = SELECTORS[config.selector](graph, utility, eligible, take, config, rng)
    return np.sort(picks.astype(np.int64))


def merge_part_selections(
    graph: KnnGraph,
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    budget: int,
    part_picks: Sequence[npt.NDArray[np.int64]],
    config: SelectionConfig,
    seed: int,
) -> MergedSelection:
    """RandGreeDi's merge round on the global graph: greedy over the union of the parts' picks,
    then the better (by facility-location objective) of it and the best part that fills the
    budget. part_picks hold global sample ids."""
    union = np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in part_picks]))
    in_union = np.zeros(graph.n, dtype=np.bool_)
    in_union[union] = True
    in_union &= eligible
    take = min(budget, int(in_union.sum()))
    rng = np.random.default_rng([seed, len(part_picks)])  # after the parts' streams 0..m-1
    merged = np.sort(SELECTORS[config.selector](graph, utility, in_union, take, config, rng))
    similarity = build_sparse_similarity(graph)
    weight = config.diversity_weight
    merge_value = facility_location_objective(similarity, utility, merged, weight)
    part_values = tuple(
        facility_location_objective(similarity, utility, p, weight) for p in part_picks
    )
    best, source, value = merged.astype(np.int64), "merge", merge_value
    for index, (picks, part_value) in enumerate(zip(part_picks, part_values, strict=True)):
        if picks.shape[0] == take and part_value > value:
            best, source, value = np.sort(picks).astype(np.int64), f"part {index}", part_value
    return MergedSelection(best, source, value, merge_value, part_values)

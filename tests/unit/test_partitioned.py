"""The sharded round's pure parts and its in-process adapter, against exact oracles."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.adapters.ports import ShardedIndex
from grace_selection.adapters.sharded_index import LocalShardedIndex
from grace_selection.core.config import SelectionConfig
from grace_selection.core.facility_location import (
    facility_location_objective,
    select_facility_location,
)
from grace_selection.core.graph import KnnGraph
from grace_selection.core.partitioned import (
    merge_neighbor_lists,
    merge_part_selections,
    partition_randomly,
)
from grace_selection.core.similarity import build_sparse_similarity
from grace_selection.service.sharded_round import select_sharded

CONFIG = SelectionConfig(selector="facility_location", budget_fraction=0.1)


def clustered(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(1, n // 100), dim))
    labels = rng.integers(0, centers.shape[0], size=n)
    return (centers[labels] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def exact_graph(vectors: npt.NDArray[np.float32], k: int) -> KnnGraph:
    index = BruteForceIndex(vectors.shape[1])
    index.upsert(np.arange(vectors.shape[0], dtype=np.int64), vectors)
    return index.knn_graph(k)


def recall(graph: KnnGraph, exact: KnnGraph) -> float:
    found = (graph.neighbors[:, :, None] == exact.neighbors[:, None, :]).any(axis=2)
    return float(found.mean())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 500), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_random_parts_are_a_partition_of_near_equal_sorted_parts(
    n: int, parts: int, seed: int
) -> None:
    parts = min(parts, n)
    split = partition_randomly(n, parts, np.random.default_rng(seed))
    assert len(split) == parts
    assert np.array_equal(np.sort(np.concatenate(split)), np.arange(n))
    sizes = [p.size for p in split]
    assert max(sizes) - min(sizes) <= 1
    assert all((np.diff(p) > 0).all() for p in split)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 4), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_merged_top_lists_are_the_top_of_the_whole_row(shards: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sims = rng.random((20, 30)).astype(np.float32)  # (rows, all ids), distinct values
    owner = rng.integers(0, shards, size=30)
    ids_parts, sims_parts = [], []
    for shard in range(shards):
        cols = np.flatnonzero(owner == shard)
        top = np.argsort(-sims[:, cols], axis=1)[:, :k]
        part_ids = np.full((20, k), -1, dtype=np.int64)
        part_sims = np.full((20, k), -np.inf, dtype=np.float32)
        part_ids[:, : top.shape[1]] = cols[top]
        part_sims[:, : top.shape[1]] = np.take_along_axis(sims[:, cols], top, axis=1)
        ids_parts.append(part_ids)
        sims_parts.append(part_sims)
    ids, best = merge_neighbor_lists(ids_parts, sims_parts, k)
    expected = np.argsort(-sims, axis=1)[:, :k]
    assert np.array_equal(ids[:, : expected.shape[1]], expected)
    assert np.allclose(best[:, : expected.shape[1]], np.take_along_axis(sims, expected, axis=1))


def test_local_shards_build_the_exact_graph_and_select_near_the_one_process_greedy() -> None:
    vectors = clustered(4000, 16, seed=1)
    utility = np.random.default_rng(2).random(4000).astype(np.float32)
    eligible = np.ones(4000, dtype=np.bool_)
    index: ShardedIndex = LocalShardedIndex(16, shards=3, block_rows=1000)
    outcome = select_sharded(index, vectors, utility, eligible, CONFIG, seed=5)
    exact = exact_graph(vectors, CONFIG.k)
    assert recall(outcome.graph, exact) >= 0.99
    picks = outcome.selection.picks
    assert picks.size == 400
    assert np.unique(picks).size == 400
    one = select_facility_location(exact, utility, eligible, 400, CONFIG, np.random.default_rng(0))
    similarity = build_sparse_similarity(exact)
    ratio = facility_location_objective(similarity, utility, picks, 1.0) / (
        facility_location_objective(similarity, utility, one, 1.0)
    )
    assert ratio >= 0.98
    assert set(outcome.seconds) == {"build", "graph", "parts", "merge"}
    assert [r["count"] for r in index.reports()] == [1334, 1333, 1333]


def test_the_merge_keeps_the_better_of_the_union_greedy_and_the_best_part() -> None:
    vectors = clustered(1500, 8, seed=3)
    graph = exact_graph(vectors, 10)
    utility = np.random.default_rng(4).random(1500).astype(np.float32)
    eligible = np.ones(1500, dtype=np.bool_)
    similarity = build_sparse_similarity(graph)
    good = select_facility_location(graph, utility, eligible, 100, CONFIG, np.random.default_rng(0))
    poor = np.arange(100, dtype=np.int64)  # a part that picked blindly
    merged = merge_part_selections(graph, utility, eligible, 100, [poor, good], CONFIG, seed=1)
    assert merged.picks.size == 100
    assert np.unique(merged.picks).size == 100
    assert merged.objective >= max(merged.part_objectives) - 1e-6
    assert merged.objective == max(merged.merge_objective, *merged.part_objectives)
    assert np.isclose(
        facility_location_objective(similarity, utility, merged.picks, 1.0), merged.objective
    )

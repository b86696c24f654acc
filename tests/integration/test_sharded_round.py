"""A shrunk sharded round on the session's real local Ray: 5k samples over 2 shard actors.

The graph from the fanned-out queries is checked against brute force, the RandGreeDi selection
against the one-process facility-location greedy on the exact graph, and the Ray actors against
the same shards run in this process (same partition, same answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.adapters.ray_shards import RayShardedIndex
from grace_selection.adapters.sharded_index import LocalShardedIndex
from grace_selection.core.config import SelectionConfig
from grace_selection.core.facility_location import (
    facility_location_objective,
    select_facility_location,
)
from grace_selection.core.similarity import build_sparse_similarity
from grace_selection.service.sharded_keeper import ShardedGraphKeeper
from grace_selection.service.sharded_round import select_sharded
from tests.unit.api_support import api_client, create_job, make_clustered, wait_published, warm_up

N, DIM = 5000, 32
CONFIG = SelectionConfig(selector="facility_location", budget_fraction=0.1)


def clustered_vectors() -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, DIM))
    return (centers[rng.integers(0, 50, N)] + 0.6 * rng.normal(size=(N, DIM))).astype(np.float32)


def test_sharded_round_on_ray_matches_brute_force_and_the_one_process_greedy(
    ray_cluster: Any,
) -> None:
    vectors = clustered_vectors()
    utility = np.random.default_rng(1).random(N).astype(np.float32)
    eligible = np.ones(N, dtype=np.bool_)
    index = RayShardedIndex(DIM, shards=2, block_rows=1024)
    try:
        outcome = select_sharded(index, vectors, utility, eligible, CONFIG, seed=7)
        reports = index.reports()
    finally:
        index.close()

    exact = BruteForceIndex(DIM)
    exact.upsert(np.arange(N, dtype=np.int64), vectors)
    oracle = exact.knn_graph(CONFIG.k)
    found = (outcome.graph.neighbors[:, :, None] == oracle.neighbors[:, None, :]).any(axis=2)
    assert found.mean() >= 0.98

    picks = outcome.selection.picks
    assert picks.size == N // 10
    assert np.unique(picks).size == picks.size
    one = select_facility_location(
        oracle, utility, eligible, picks.size, CONFIG, np.random.default_rng(0)
    )
    similarity = build_sparse_similarity(oracle)
    ratio = facility_location_objective(similarity, utility, picks, 1.0) / (
        facility_location_objective(similarity, utility, one, 1.0)
    )
    assert ratio >= 0.98
    assert sorted(r["count"] for r in reports) == [2500, 2500]
    assert all(r["peak_rss_mb"] > 0 for r in reports)

    local = select_sharded(LocalShardedIndex(DIM, 2), vectors, utility, eligible, CONFIG, seed=7)
    assert np.array_equal(local.graph.neighbors, outcome.graph.neighbors)
    assert np.array_equal(local.selection.picks, picks)


def test_a_sharded_job_runs_its_rounds_on_ray_actors_through_the_api(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """GRACE_SHARDS=2 on the session's Ray: the service drives two shard actors per job,
    publishes the round, and lets the actors go when it stops."""
    n, dim = 2000, 16
    with api_client(tmp_path, shards=2, shard_backend="ray") as client:
        create_job(client, "job", n=n, dim=dim, seed=1)
        warm_up(client, "job", n, dim)
        assert client.post("/v1/jobs/job/rounds").status_code == 202
        manifest = wait_published(client, "job", 0, timeout=180)
        assert manifest["status"] == "published", manifest
        assert manifest["count"] == round(0.1 * n)
        keeper = client.app.state.service.job("job").keeper  # type: ignore[attr-defined]
        assert isinstance(keeper, ShardedGraphKeeper)
        assert len(keeper.reports()) == 2  # the two actors answer
        assert keeper.graph is not None
        truth = BruteForceIndex(dim)
        truth.upsert(np.arange(n, dtype=np.int64), make_clustered(n, dim, 0))
        exact = truth.knn_graph(keeper.graph.k).neighbors
        pairs = zip(keeper.graph.neighbors, exact, strict=True)
        assert sum(np.intersect1d(a, b).size for a, b in pairs) / exact.size >= 0.98
    assert keeper.reports() == []  # the actors went with the service

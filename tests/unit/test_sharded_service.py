"""GRACE_SHARDS: a job's graph and selection on shards, through the HTTP API (local shards).

The shards' global graph is the exact one here (brute-force-like answers at this size), the
coreset has the budget's size, later rounds rebuild on the shards, a sample without an
embedding has no edges, and a stratified job still selects (per stratum, one process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from grace_selection.adapters.sharded_index import LocalShardedIndex
from grace_selection.core.config import SelectionConfig
from grace_selection.service.batches import EmbeddingBatch, ScoreBatch
from grace_selection.service.round_step import step_round
from grace_selection.service.sharded_keeper import ShardedGraphKeeper
from grace_selection.service.state import JobArrays
from tests.unit.api_support import (
    api_client,
    create_job,
    embeddings_frame,
    make_clustered,
    post_frame,
    scores_frame,
    wait_published,
    warm_up,
)

N, DIM = 400, 8


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with api_client(tmp_path, shards=2, shard_backend="local") as test_client:
        yield test_client


def exact_neighbors(vectors: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_a_sharded_job_publishes_rounds_on_the_shards_graph(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM, seed=3)
    warm_up(client, "job", N, DIM)
    assert client.post("/v1/jobs/job/rounds").status_code == 202
    manifest = wait_published(client, "job", 0)
    assert manifest["status"] == "published", manifest
    assert manifest["count"] == round(0.1 * N)
    indices = client.get("/v1/jobs/job/rounds/0/indices", params={"format": "json"}).json()
    assert len(set(indices["indices"])) == manifest["count"]
    service = client.app.state.service  # type: ignore[attr-defined]
    keeper = service.job("job").keeper
    assert isinstance(keeper, ShardedGraphKeeper)
    assert keeper.graph is not None
    truth = exact_neighbors(make_clustered(N, DIM, 0), keeper.graph.k)
    hits = sum(
        np.intersect1d(a, b).size for a, b in zip(keeper.graph.neighbors, truth, strict=True)
    )
    assert hits / truth.size >= 0.99
    sample = client.get("/v1/jobs/job/samples/5").json()
    assert len(sample["neighbors"]) == keeper.graph.k
    # A later round with new embeddings rebuilds on the shards and publishes again.
    rng = np.random.default_rng(1)
    moved = np.arange(0, N, 3)
    body = embeddings_frame(moved, rng.normal(size=(moved.size, DIM)), "e1", round_=1)
    assert post_frame(client, "/v1/jobs/job/embeddings", body).status_code == 200
    body = scores_frame(moved, "s1", round_=1, importance=rng.random(moved.size))
    assert post_frame(client, "/v1/jobs/job/scores", body).status_code == 200
    client.post("/v1/jobs/job/rounds")
    assert wait_published(client, "job", 1)["status"] == "published"


def test_samples_without_embeddings_have_no_edges_and_strata_still_select(
    tmp_path: Path,
) -> None:
    n = 300
    strata = np.arange(n, dtype=np.int32) % 3
    arrays = JobArrays(n, DIM, strata)
    embedded = np.arange(0, n - 30, dtype=np.int64)  # the last 30 never embedded
    arrays.apply(EmbeddingBatch("e", 0, embedded, make_clustered(embedded.size, DIM), b""), 1)
    rng = np.random.default_rng(2)
    ids = np.arange(n, dtype=np.int64)
    importance = rng.random(n).astype(np.float32)
    arrays.apply(ScoreBatch("s", "worker", 0, 0, ids, None, importance, b""), 2)
    keeper = ShardedGraphKeeper(n, DIM, lambda dim: LocalShardedIndex(dim, 3))
    config = SelectionConfig(k=5)
    previous = np.full(n, np.nan, np.float32)
    outcome = step_round(arrays, keeper, config, previous, round_=0, seed=0)
    graph = outcome.graph
    assert (graph.neighbors[n - 30 :] == -1).all()
    assert not np.isin(graph.neighbors[: n - 30], np.arange(n - 30, n)).any()
    real = graph.neighbors[: n - 30] >= 0
    assert real.all()  # every embedded sample keeps k neighbours among the embedded
    picks = outcome.result.coreset.indices
    assert picks.size == round(0.1 * n)
    assert np.unique(picks).size == picks.size

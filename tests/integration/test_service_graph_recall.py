"""A round whose graph was refreshed, not built, publishes the keeper's sampled recall, and the
metrics endpoint's per-job gauge carries it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grace_proto.frames import encode_frame
from grace_proto.models import CreateJobRequest
from grace_selection.adapters.local_store import LocalScoreStore
from grace_selection.api.app import make_index_factory
from grace_selection.service.gauges import describe_gauges
from grace_selection.service.registry import SelectionService
from tests.integration.test_service_replay import scores, wait_round

N, DIM = 400, 8


def test_a_refreshed_round_publishes_its_graph_recall(tmp_path: Path) -> None:
    service = SelectionService(
        LocalScoreStore(tmp_path / "store"), make_index_factory("brute"), tmp_path
    )
    service.load()
    try:
        service.create_job(CreateJobRequest(job_id="job", n_samples=N, dim=DIM))
        rng = np.random.default_rng(0)
        ids = np.arange(N, dtype=np.int64)
        vectors = rng.normal(size=(N, DIM)).astype(np.float32)
        first = encode_frame({"batch_id": "e0"}, {"ids": ids, "embeddings": vectors})
        service.ingest("job", "embeddings", first)
        service.ingest("job", "scores", scores("s0", ids, rng))
        service.trigger_round("job", None)
        wait_round(service, "job", 0)
        job = service.job("job")
        assert job.rounds.manifest(0).graph_recall is None  # built, not refreshed

        moved = ids[: N // 5]
        nudged = vectors[moved] + 0.05 * rng.normal(size=(moved.size, DIM)).astype(np.float32)
        second = encode_frame({"batch_id": "e1"}, {"ids": moved, "embeddings": nudged})
        service.ingest("job", "embeddings", second)
        service.ingest("job", "scores", scores("s1", moved, rng, round_=1))
        service.trigger_round("job", None)
        wait_round(service, "job", 1)
        recall = job.rounds.manifest(1).graph_recall
        assert recall is not None
        assert 0.8 <= recall <= 1.0  # small moves: the refreshed graph stays close to exact
        gauges = describe_gauges(job)
        assert gauges is not None
        assert gauges.graph_recall == recall
    finally:
        service.close()

"""State after a restart equals state before it: snapshot (compaction) + log replay, on both
stores, through the service layer without HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from grace_proto.frames import encode_frame
from grace_proto.models import CreateJobRequest, RoundStatus
from grace_selection.adapters.local_store import LocalScoreStore
from grace_selection.adapters.ports import ScoreStore
from grace_selection.adapters.redis_store import RedisScoreStore
from grace_selection.api.app import make_index_factory
from grace_selection.service.registry import SelectionService
from grace_selection.service.round_runner import compact_if_due

N, DIM = 500, 6


@pytest.fixture(params=["local", "redis"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ScoreStore]:
    def make() -> ScoreStore:
        if request.param == "local":
            return LocalScoreStore(tmp_path / "store")
        return RedisScoreStore(request.getfixturevalue("redis_url"), chunk_bytes=4096)

    return make


def open_service(store: ScoreStore, data_dir: Path) -> SelectionService:
    service = SelectionService(store, make_index_factory("brute"), data_dir)
    service.load()
    return service


def wait_round(service: SelectionService, job: str, r: int) -> None:
    deadline = time.monotonic() + 60
    while r not in service.job(job).rounds.numbers():
        failed = service.job(job).rounds.failed
        assert failed is None, failed
        assert time.monotonic() < deadline
        time.sleep(0.02)


def scores(batch_id: str, ids: np.ndarray, rng: np.random.Generator, round_: int = 0) -> bytes:
    meta = {"batch_id": batch_id, "source": "worker", "round": round_}
    values = rng.random(ids.size).astype(np.float32)
    return encode_frame(meta, {"ids": ids.astype(np.int64), "importance": values, "loss": values})


def test_compaction_and_replay_restore_the_same_state(
    store_factory: Callable[[], ScoreStore], tmp_path: Path
) -> None:
    service = open_service(store_factory(), tmp_path)
    service.create_job(
        CreateJobRequest(job_id="job", n_samples=N, dim=DIM, strata=[i % 3 for i in range(N)])
    )
    rng = np.random.default_rng(0)
    ids = np.arange(N, dtype=np.int64)
    service.ingest(
        "job",
        "embeddings",
        encode_frame(
            {"batch_id": "e"},
            {"ids": ids, "embeddings": rng.normal(size=(N, DIM)).astype(np.float32)},
        ),
    )
    first_scores = scores("s0", ids, rng)
    service.ingest("job", "scores", first_scores)
    job = service.job("job")
    assert compact_if_due(job, service.store, force=True)
    # After the snapshot: more batches, some overwriting, a new strata map, and a round.
    service.ingest("job", "scores", scores("s1", ids[::3], rng))
    service.ingest(
        "job",
        "embeddings",
        encode_frame(
            {"batch_id": "e2"},
            {"ids": ids[:7], "embeddings": rng.normal(size=(7, DIM)).astype(np.float32)},
        ),
    )
    service.ingest(
        "job", "strata", encode_frame({"batch_id": "t"}, {"strata": (ids % 2).astype(np.int32)})
    )
    service.trigger_round("job", None)
    wait_round(service, "job", 0)
    service.ingest("job", "scores", scores("s2", ids[::5], rng, round_=1))
    before = job.arrays.snapshot_arrays()
    manifest = service.manifest_json("job", "0")
    service.close()

    restarted = open_service(store_factory(), tmp_path)
    try:
        again = restarted.job("job")
        after = again.arrays.snapshot_arrays()
        assert sorted(after) == sorted(before)
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        assert restarted.manifest_json("job", "0") == manifest
        assert again.keeper.loaded  # the index snapshot written after round 0
        # Batch ids survive compaction (s0 is in the snapshot) and replay (t is in the log).
        assert restarted.ingest("job", "scores", first_scores).duplicate
        strata = encode_frame({"batch_id": "t"}, {"strata": (ids % 2).astype(np.int32)})
        assert restarted.ingest("job", "strata", strata).duplicate
        restarted.trigger_round("job", None)
        wait_round(restarted, "job", 1)
        assert again.rounds.manifest(1).status == RoundStatus.PUBLISHED
    finally:
        restarted.close()


def test_a_long_ingest_without_rounds_is_compacted_in_the_background(
    store_factory: Callable[[], ScoreStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grace_selection.service import round_runner

    monkeypatch.setattr(round_runner, "COMPACT_MIN_BYTES", 1024)
    service = open_service(store_factory(), tmp_path)
    service.create_job(CreateJobRequest(job_id="job", n_samples=N, dim=DIM))
    rng = np.random.default_rng(1)
    ids = np.arange(N, dtype=np.int64)
    for i in range(12):  # ~12 x 4 KB of scores: past twice the (tiny) state size
        service.ingest("job", "scores", scores(f"s{i}", ids, rng))
    deadline = time.monotonic() + 30
    while service.store.read_snapshot("job") is None:
        assert time.monotonic() < deadline, "no snapshot was written"
        time.sleep(0.05)
    before = service.job("job").arrays.snapshot_arrays()
    snapshot = service.store.read_snapshot("job")
    assert snapshot is not None
    assert len(list(service.store.read_log("job", after_seq=snapshot.seq))) < 12
    service.close()
    restarted = open_service(store_factory(), tmp_path)
    try:
        after = restarted.job("job").arrays.snapshot_arrays()
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    finally:
        restarted.close()

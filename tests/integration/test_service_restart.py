"""kill -9 of `grace serve` in the middle of ingest, then a restart: every acknowledged batch is
there and every published round is served byte-identical. Real processes, both stores."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from grace_proto.frames import MEDIA_TYPE, encode_frame
from tests.integration.service_process import ServiceProcess, start_service

N, DIM, JOB = 3000, 16, "restart"
BATCH = 100  # samples per ingest batch during the kill
SLICES = [(0, 1), (0, 2), (1, 2), (2, 5)]


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "local" else str(request.getfixturevalue("redis_url"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def post(client: httpx.Client, path: str, meta: dict[str, Any], **arrays: Any) -> httpx.Response:
    body = encode_frame(meta, arrays)
    return client.post(path, content=body, headers={"content-type": MEDIA_TYPE})


def wait_round(client: httpx.Client, r: int) -> bytes:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/jobs/{JOB}/rounds/{r}")
        if answer.status_code == 200 and answer.json()["status"] == "published":
            return answer.content
        assert answer.json().get("status") != "failed", answer.text
        time.sleep(0.05)
    raise TimeoutError(f"round {r} not published")


def served_bytes(client: httpx.Client, rounds: list[int]) -> dict[str, str]:
    """sha256 of everything a trainer or worker reads about the published rounds."""
    digests: dict[str, str] = {}
    for r in rounds:
        paths = [f"/v1/jobs/{JOB}/rounds/{r}", f"/v1/jobs/{JOB}/rounds/{r + 1}/rescore"]
        for rank, world in SLICES:
            for fmt in ("bin", "json"):
                paths.append(
                    f"/v1/jobs/{JOB}/rounds/{r}/indices?rank={rank}&world={world}&format={fmt}"
                )
        for path in paths:
            answer = client.get(path)
            assert answer.status_code == 200, f"{path}: {answer.text}"
            digests[path] = hashlib.sha256(answer.content).hexdigest()
    return digests


def publish_two_rounds(client: httpx.Client) -> None:
    rng = np.random.default_rng(0)
    assert (
        client.post("/v1/jobs", json={"job_id": JOB, "n_samples": N, "dim": DIM}).status_code == 201
    )
    ids = np.arange(N, dtype=np.int64)
    centers = rng.normal(size=(30, DIM))
    vectors = (centers[rng.integers(0, 30, N)] + 0.3 * rng.normal(size=(N, DIM))).astype(np.float32)
    assert (
        post(
            client,
            f"/v1/jobs/{JOB}/embeddings",
            {"batch_id": "e0", "round": 0},
            ids=ids,
            embeddings=vectors,
        ).status_code
        == 200
    )
    meta = {"batch_id": "s0", "source": "worker", "round": 0}
    assert (
        post(
            client,
            f"/v1/jobs/{JOB}/scores",
            meta,
            ids=ids,
            importance=rng.random(N).astype(np.float32),
            loss=rng.random(N).astype(np.float32),
        ).status_code
        == 200
    )
    client.post(f"/v1/jobs/{JOB}/rounds")
    wait_round(client, 0)
    plan = np.array(
        client.get(f"/v1/jobs/{JOB}/rounds/1/rescore?format=json").json()["ids"], np.int64
    )
    meta = {"batch_id": "s1", "source": "worker", "round": 1}
    assert (
        post(
            client,
            f"/v1/jobs/{JOB}/scores",
            meta,
            ids=plan,
            importance=rng.random(plan.size).astype(np.float32),
        ).status_code
        == 200
    )
    client.post(f"/v1/jobs/{JOB}/rounds")
    wait_round(client, 1)


def ingest_until_killed(
    service: ServiceProcess, acked: list[tuple[str, int]], stop_after: int
) -> None:
    """Two writers post disjoint score batches (loss = batch number) until the process dies;
    the main thread kills it once `stop_after` batches were acknowledged."""
    lock = threading.Lock()

    def writer(first: int) -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            number = first
            while True:
                ids = (np.arange(BATCH) + number * BATCH) % N
                meta = {"batch_id": f"k{number}", "source": "trainer", "round": 2}
                losses = np.full(BATCH, float(number), np.float32)
                try:
                    answer = post(
                        client,
                        f"/v1/jobs/{JOB}/scores",
                        meta,
                        ids=ids.astype(np.int64),
                        loss=losses,
                    )
                except httpx.HTTPError:
                    return  # the process is gone: this batch was never acknowledged
                assert answer.status_code == 200, answer.text
                with lock:
                    acked.append((f"k{number}", number))
                number += 2

    threads = [threading.Thread(target=writer, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    while True:
        with lock:
            if len(acked) >= stop_after:
                break
        time.sleep(0.001)
    service.kill_hard()  # while both writers are mid-request
    for thread in threads:
        thread.join(timeout=30)


def test_kill_9_mid_ingest_loses_nothing_acknowledged(store: str, data_dir: Path) -> None:
    service = start_service(data_dir, store)
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            publish_two_rounds(client)
            before = served_bytes(client, [0, 1])
        acked: list[tuple[str, int]] = []
        ingest_until_killed(service, acked, stop_after=12)
    finally:
        service.stop()
    assert service.proc.returncode == -9

    restarted = start_service(data_dir, store)
    try:
        with httpx.Client(base_url=restarted.url, timeout=30) as client:
            assert served_bytes(client, [0, 1]) == before
            # Each batch covers its own id range (no wrap-around below N / BATCH batches), so an
            # acknowledged batch must be recorded (a resend is a duplicate) and applied.
            assert max(number for _, number in acked) < N // BATCH
            for batch_id, number in acked:
                ids = ((np.arange(BATCH) + number * BATCH) % N).astype(np.int64)
                meta = {"batch_id": batch_id, "source": "trainer", "round": 2}
                losses = np.full(BATCH, float(number), np.float32)
                again = post(client, f"/v1/jobs/{JOB}/scores", meta, ids=ids, loss=losses)
                assert again.json()["duplicate"] is True, f"{batch_id} was acknowledged but is gone"
                for sample_id in ids[[0, BATCH // 2, -1]]:
                    sample = client.get(f"/v1/jobs/{JOB}/samples/{int(sample_id)}").json()
                    assert sample["loss"] == float(number), (batch_id, sample)
            # The service goes on: the next round computes from the recovered state.
            client.post(f"/v1/jobs/{JOB}/rounds")
            wait_round(client, 2)
            assert served_bytes(client, [0, 1]) == before
            assert client.get("/readyz").json()["checks"]["store"] == "ok"
    finally:
        restarted.stop()
    # The index snapshot written after round 1 was loaded instead of rebuilt.
    assert "2 rounds, index loaded" in restarted.log_text()

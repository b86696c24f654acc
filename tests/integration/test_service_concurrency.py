"""A selection in progress never blocks reads of the current round (real uvicorn, real HNSW)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from grace_proto.frames import MEDIA_TYPE, encode_frame
from tests.integration.service_process import start_service

N, DIM, JOB = 30_000, 64, "busy"  # big enough that a round takes seconds on a quiet machine


def post(client: httpx.Client, path: str, meta: dict[str, Any], **arrays: Any) -> None:
    answer = client.post(
        path, content=encode_frame(meta, arrays), headers={"content-type": MEDIA_TYPE}
    )
    assert answer.status_code == 200, answer.text


def wait_published(client: httpx.Client, r: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/jobs/{JOB}/rounds/{r}").json().get("status") != "published":
        assert time.monotonic() < deadline, f"round {r} not published"
        time.sleep(0.05)


def embed_all(client: httpx.Client, batch_id: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    for start in range(0, N, 2000):
        ids = np.arange(start, start + 2000, dtype=np.int64)
        post(
            client,
            f"/v1/jobs/{JOB}/embeddings",
            {"batch_id": f"{batch_id}-{start}"},
            ids=ids,
            embeddings=vectors[ids],
        )


def test_reads_stay_fast_while_a_round_builds_its_graph(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data", "", index="hnsw")
    try:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            client.post("/v1/jobs", json={"job_id": JOB, "n_samples": N, "dim": DIM})
            embed_all(client, "e0", 0)
            ids = np.arange(N, dtype=np.int64)
            importance = np.random.default_rng(1).random(N).astype(np.float32)
            post(
                client,
                f"/v1/jobs/{JOB}/scores",
                {"batch_id": "s0", "source": "worker", "round": 0},
                ids=ids,
                importance=importance,
            )
            client.post(f"/v1/jobs/{JOB}/rounds")
            wait_published(client, 0)
            path = f"/v1/jobs/{JOB}/rounds/0/indices?rank=0&world=4"
            published = client.get(path).content
            # Every sample moves: round 1 re-links the whole graph, seconds of CPU work.
            embed_all(client, "e1", 2)
            started = time.monotonic()
            client.post(f"/v1/jobs/{JOB}/rounds")
            latencies = []
            while client.get(f"/v1/jobs/{JOB}/rounds/1").json()["status"] == "computing":
                t0 = time.perf_counter()
                answer = client.get(path)
                latencies.append(time.perf_counter() - t0)
                assert answer.status_code == 200
                assert answer.content == published
                time.sleep(0.01)
            busy = time.monotonic() - started
            wait_published(client, 1)
    finally:
        service.stop()
    assert busy > 1.0, f"the round took {busy:.2f} s: too short to show anything"
    assert len(latencies) >= 10
    # A blocked event loop would make some read wait for the whole round (seconds).
    assert max(latencies) < min(1.0, busy / 2), (max(latencies), busy)

"""A job whose state cannot be allocated, or that fails to load, no longer poisons the service.

Issue 14: a job of n_samples=2000000, dim=8192 was accepted; its first embedding row was
journalled, then failed to apply (MemoryError, 500); its resend answered `duplicate: true`;
after a restart /readyz stayed 503 forever and GET and DELETE of the job answered 404. Real
`grace serve` processes, killed and restarted on the same data directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from grace_proto.frames import MEDIA_TYPE, encode_frame
from grace_selection.service.sizing import default_job_limit, read_memory_bytes
from tests.integration.service_process import start_service

FRAME = {"content-type": MEDIA_TYPE}


def one_row(dim: int, batch_id: str) -> bytes:
    arrays: dict[str, npt.NDArray[Any]] = {
        "ids": np.array([0], np.int64),
        "embeddings": np.ones((1, dim), np.float32),
    }
    return encode_frame({"batch_id": batch_id, "round": 0}, arrays)


def test_a_job_over_the_memory_limit_is_refused_at_creation(tmp_path: Path) -> None:
    with (
        start_service(tmp_path / "data", "") as service,
        httpx.Client(base_url=service.url) as client,
    ):
        spec = {"job_id": "huge", "n_samples": 2_000_000, "dim": 8192}
        answer = client.post("/v1/jobs", json=spec)
        assert answer.status_code == 422, answer.text
        error = answer.json()
        assert error["error"] == "job_too_large"
        assert error["field"] == "n_samples"
        assert error["extra"]["fields"] == ["n_samples", "dim"]
        assert error["extra"]["limit_bytes"] == default_job_limit()  # half of this machine's
        assert error["extra"]["needed_bytes"] > 2_000_000 * 8192 * 4
        assert "GRACE_MAX_JOB_BYTES" in error["detail"]
        assert client.get("/v1/jobs/huge").status_code == 404  # nothing was created
        small = client.post("/v1/jobs", json={"job_id": "small", "n_samples": 1000, "dim": 8})
        assert small.status_code == 201


def test_a_batch_that_cannot_be_applied_is_not_journalled(tmp_path: Path) -> None:
    """With the limit lifted, the embedding matrix cannot be allocated: a 507 that records
    nothing, so a resend is refused the same way and a restart loads the job."""
    # More embedding memory than the machine has, so that the allocation fails here.
    dim = 8192
    n = max(2_000_000, math.ceil(2 * read_memory_bytes() / (dim * 4)))
    data = tmp_path / "data"
    with start_service(data, "", GRACE_MAX_JOB_BYTES=str(2**62)) as service:
        with httpx.Client(base_url=service.url) as client:
            spec = {"job_id": "big", "n_samples": n, "dim": dim}
            assert client.post("/v1/jobs", json=spec).status_code == 201
            for _ in range(2):  # the resend: refused again, not `duplicate`
                answer = client.post(
                    "/v1/jobs/big/embeddings", content=one_row(dim, "e0"), headers=FRAME
                )
                assert answer.status_code == 507, answer.text
                assert answer.json()["error"] == "insufficient_memory"
            scores = encode_frame(
                {"batch_id": "s0", "source": "worker", "round": 0},
                {"ids": np.array([0], np.int64), "loss": np.ones(1, np.float32)},
            )
            assert (
                client.post("/v1/jobs/big/scores", content=scores, headers=FRAME).status_code == 200
            )
        service.kill_hard()
    with (
        start_service(data, "", GRACE_MAX_JOB_BYTES=str(2**62)) as service,
        httpx.Client(base_url=service.url) as client,
    ):
        assert client.get("/readyz").status_code == 200
        job = client.get("/v1/jobs/big").json()
        assert (job["embedded_count"], job["scored_count"]) == (0, 1)
        assert client.delete("/v1/jobs/big").status_code == 204


def test_a_job_that_fails_to_load_is_listed_deletable_and_blocks_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with (
        start_service(data, "") as service,
        httpx.Client(base_url=service.url, timeout=30) as client,
    ):
        for job in ("good", "bad"):
            assert (
                client.post("/v1/jobs", json={"job_id": job, "n_samples": 50, "dim": 4}).status_code
                == 201
            )
        ids = np.arange(50, dtype=np.int64)
        vectors = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
        body = encode_frame({"batch_id": "e", "round": 0}, {"ids": ids, "embeddings": vectors})
        assert (
            client.post("/v1/jobs/good/embeddings", content=body, headers=FRAME).status_code == 200
        )
        body = encode_frame(
            {"batch_id": "s", "source": "worker", "round": 0},
            {"ids": ids, "importance": np.linspace(0, 1, 50, dtype=np.float32)},
        )
        assert client.post("/v1/jobs/good/scores", content=body, headers=FRAME).status_code == 200
        client.post("/v1/jobs/good/rounds")
        while client.get("/v1/jobs/good/rounds/0").json()["status"] != "published":
            pass
        slice_before = client.get("/v1/jobs/good/rounds/0/indices").content
    # A spec this version cannot read (as after a downgrade, or a hand edit).
    spec_file = data / "store" / "jobs" / "bad" / "spec.json"
    spec = json.loads(spec_file.read_bytes())
    spec["request"]["n_samples"] = "fifty"
    spec_file.write_text(json.dumps(spec))

    with (
        start_service(data, "") as service,  # waits for /readyz 200: the bad job blocks nothing
        httpx.Client(base_url=service.url, timeout=30) as client,
    ):
        ready = client.get("/readyz").json()
        assert ready["status"] == "ok"
        assert ready["checks"]["job:bad"].startswith("failed to load: ValidationError")
        listing = client.get("/v1/jobs").json()
        assert [j["job_id"] for j in listing["jobs"]] == ["good"]
        assert [f["job_id"] for f in listing["failed"]] == ["bad"]
        assert "n_samples" in listing["failed"][0]["error"]
        assert client.get("/v1/jobs/good/rounds/0/indices").content == slice_before
        for answer in (
            client.get("/v1/jobs/bad"),
            client.get("/v1/jobs/bad/rounds/latest"),
            client.post("/v1/jobs", json={"job_id": "bad", "n_samples": 50, "dim": 4}),
        ):
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"] == "job_failed_to_load"
            assert "DELETE /v1/jobs/bad" in answer.json()["detail"]
        assert "grace_jobs_failed 1.0" in client.get("/metrics").text
        assert client.delete("/v1/jobs/bad").status_code == 204
        assert not spec_file.parent.exists()
        assert "job:bad" not in client.get("/readyz").json()["checks"]
        assert client.get("/v1/jobs/bad").status_code == 404
        assert (
            client.post("/v1/jobs", json={"job_id": "bad", "n_samples": 50, "dim": 4}).status_code
            == 201
        )

"""A real selection service in a subprocess, and a job seeded through its public API.

The job is what the page shows: clustered synthetic embeddings (so the map has structure),
strata, a JSONL text source, worker scores, and a few published rounds, each round re-scoring
the plan the service published with the previous one, as workers do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from grace_proto.frames import decode_frame, encode_frame
from grace_selection.local_service import stop_child

STRATUM_NAMES = {0: "web", 1: "code", 2: "books"}


@dataclass(frozen=True)
class SeededJob:
    job_id: str
    n: int
    dim: int
    rounds: int
    embeddings: npt.NDArray[np.float32]
    text_path: Path


class ServiceProcess:
    """`uvicorn grace_selection.api.app:create_app --factory` on a loopback port."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        token: str | None = None,
        factory: str = "grace_selection.api.app:create_app",
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.token = token
        env = {
            **os.environ,
            "GRACE_HOST": "127.0.0.1",
            "GRACE_PORT": str(port),
            "GRACE_DATA_DIR": str(data_dir),
            "GRACE_STORE": "local",
            "GRACE_LOG_LEVEL": "warning",
        }
        if token:
            env["GRACE_TOKEN"] = token
            env["GRACE_READS_REQUIRE_TOKEN"] = "true"
        self.log = (data_dir / "service.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                factory,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(
            base_url=self.url,
            timeout=120,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        self._wait_ready(data_dir)

    def _wait_ready(self, data_dir: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.close()
        log = (data_dir / "service.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the selection service did not become ready; its log:\n{log}")

    def close(self) -> None:
        self.http.close()
        stop_child(self.proc, timeout=15)
        self.log.close()

    def post_frame(self, path: str, meta: dict[str, Any], arrays: dict[str, Any]) -> Any:
        return self._ok(
            self.http.post(
                path,
                content=encode_frame(meta, arrays),
                headers={"Content-Type": "application/octet-stream"},
            )
        )

    def put_frame(self, path: str, meta: dict[str, Any], arrays: dict[str, Any]) -> Any:
        return self._ok(
            self.http.put(
                path,
                content=encode_frame(meta, arrays),
                headers={"Content-Type": "application/octet-stream"},
            )
        )

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
        return response.json() if response.content else None


def clustered_embeddings(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim)) * 2.5
    labels = rng.integers(0, centres.shape[0], size=n)
    points: npt.NDArray[np.float32] = (centres[labels] + rng.normal(size=(n, dim))).astype(
        np.float32
    )
    return points


def seed_job(
    service: ServiceProcess, job_id: str, n: int, dim: int, rounds: int, folder: Path
) -> SeededJob:
    """Create the job and publish `rounds` rounds through the HTTP API, as workers would."""
    rng = np.random.default_rng(7)
    text_path = folder / f"{job_id}.jsonl"
    with text_path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"Sample {i}: a sentence about topic {i % 97}."}) + "\n")
    service._ok(
        service.http.post(
            "/v1/jobs",
            json={
                "job_id": job_id,
                "n_samples": n,
                "dim": dim,
                "seed": 3,
                "config": {"budget_fraction": 0.1, "k": 8, "rescore_fraction": 0.3},
                "stratum_names": {str(k): v for k, v in STRATUM_NAMES.items()},
                "text_source": str(text_path),
            },
        )
    )
    strata = rng.choice(3, size=n, p=[0.5, 0.3, 0.2]).astype(np.int32)
    base = f"/v1/jobs/{job_id}"
    service.put_frame(f"{base}/strata", {"batch_id": "strata"}, {"strata": strata})
    embeddings = clustered_embeddings(n, dim, seed=11)
    ids = np.arange(n, dtype=np.int64)
    service.post_frame(
        f"{base}/embeddings",
        {"batch_id": "emb-0", "round": 0},
        {"ids": ids, "embeddings": embeddings},
    )
    # Importance grows with the distance from the data mean, so the map has a visible pattern.
    radius = np.linalg.norm(embeddings - embeddings.mean(axis=0), axis=1)
    for r in range(rounds):
        if r == 0:
            plan = ids
        else:
            frame = decode_frame(service.http.get(f"{base}/rounds/{r - 1}/rescore").content)
            plan = frame.array("ids", "<i8", 1)
        noise = rng.gamma(2.0, 0.2, size=plan.size)
        importance = (radius[plan] / radius.max() * (1 + 0.3 * r) + noise).astype(np.float32)
        loss = (2.0 + rng.normal(0, 0.5, size=plan.size) - 0.1 * r).astype(np.float32)
        service.post_frame(
            f"{base}/scores",
            {"batch_id": f"scores-{r}", "source": "worker", "round": r, "step": 100 * r},
            {"ids": np.ascontiguousarray(plan), "loss": loss, "importance": importance},
        )
        service._ok(service.http.post(f"{base}/rounds", json={}))
        wait_published(service, job_id, r)
    return SeededJob(job_id, n, dim, rounds, embeddings, text_path)


def wait_published(service: ServiceProcess, job_id: str, r: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = service.http.get(f"/v1/jobs/{job_id}/rounds/{r}")
        if response.status_code == 200:
            status = response.json()["status"]
            if status == "published":
                return
            if status == "failed":
                raise RuntimeError(f"round {r} of {job_id} failed: {response.json()}")
        time.sleep(0.3)
    raise RuntimeError(f"round {r} of {job_id} was not published within {timeout:.0f} s")


def seed_inspection_job(
    service: ServiceProcess, job_id: str, n: int, dim: int, rounds: int
) -> SeededJob:
    """A job whose rounds give every inspection panel something to show.

    Round 0 scores everything; each later round re-scores exactly the plan the previous round
    published (GET rounds/r/rescore), with importance cut to a tenth, so the `delta` rule pulls
    the stale neighbours' estimates down, many of them below 0. Strata have names, their own
    clusters, and their own levels of loss and importance.
    """
    rng = np.random.default_rng(5)
    service._ok(
        service.http.post(
            "/v1/jobs",
            json={
                "job_id": job_id,
                "n_samples": n,
                "dim": dim,
                "seed": 1,
                "config": {"budget_fraction": 0.1, "k": 8, "rescore_fraction": 0.3},
                "stratum_names": {str(k): v for k, v in STRATUM_NAMES.items()},
            },
        )
    )
    # Each data source is its own clusters, as sources are in real embeddings: the map
    # coloured by stratum shows regions, and each stratum its own level of importance.
    centres = rng.normal(size=(9, dim)) * 3.0
    labels = rng.integers(0, centres.shape[0], size=n)
    embeddings = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    strata = (labels % 3).astype(np.int32)
    base = f"/v1/jobs/{job_id}"
    service.put_frame(f"{base}/strata", {"batch_id": "strata"}, {"strata": strata})
    ids = np.arange(n, dtype=np.int64)
    service.post_frame(
        f"{base}/embeddings",
        {"batch_id": "emb-0", "round": 0},
        {"ids": ids, "embeddings": embeddings},
    )
    level = np.array([1.0, 2.0, 3.0], dtype=np.float32)[strata]
    importance = (level * rng.uniform(0.2, 1.0, size=n)).astype(np.float32)
    for r in range(rounds):
        plan = ids
        if r > 0:
            frame = decode_frame(service.http.get(f"{base}/rounds/{r}/rescore").content)
            plan = frame.array("ids", "<i8", 1)
            importance[plan] *= 0.1
        loss = (1.0 + strata[plan] + rng.normal(0, 0.3, size=plan.size)).astype(np.float32)
        service.post_frame(
            f"{base}/scores",
            {"batch_id": f"scores-{r}", "source": "worker", "round": r, "step": 10 * r},
            {"ids": np.ascontiguousarray(plan), "loss": loss, "importance": importance[plan]},
        )
        service._ok(service.http.post(f"{base}/rounds", json={}))
        wait_published(service, job_id, r)
    return SeededJob(job_id, n, dim, rounds, embeddings, Path())

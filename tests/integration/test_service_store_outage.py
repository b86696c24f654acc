"""Redis down at start-up: the service waits for it (not ready, saying why), then loads."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.integration.service_process import start_service


def test_service_waits_for_redis_then_loads_its_jobs(tmp_path: Path) -> None:
    # A job exists in a Redis that is not running yet: seed it through a first service.
    port = free_port()
    store = f"redis://127.0.0.1:{port}/0"
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(redis_dir)]
    args += ["--save", "", "--appendonly", "yes"]
    redis = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        first = start_service(tmp_path / "data", store)
        try:
            answer = httpx.post(
                f"{first.url}/v1/jobs", json={"job_id": "kept", "n_samples": 5, "dim": 2}
            )
            assert answer.status_code == 201
        finally:
            first.stop()
    finally:
        redis.terminate()
        redis.wait(timeout=20)

    # Start the service while Redis is down: it must come up, say why it is not ready, and wait.
    service = start_service(tmp_path / "data", store, wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"{service.url}/readyz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ready.status_code == 503
        assert "waiting for the store" in ready.json()["checks"]["state"]
        assert httpx.get(f"{service.url}/healthz").status_code == 200
        assert httpx.get(f"{service.url}/v1/jobs").status_code == 503
        redis = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while httpx.get(f"{service.url}/readyz", timeout=2).status_code != 200:
                assert time.monotonic() < deadline, "never became ready after Redis came back"
                time.sleep(0.2)
            jobs = httpx.get(f"{service.url}/v1/jobs").json()["jobs"]
            assert [job["job_id"] for job in jobs] == ["kept"]
        finally:
            service.stop()
            redis.terminate()
            redis.wait(timeout=20)
    finally:
        service.stop()

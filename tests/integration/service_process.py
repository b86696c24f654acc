"""`grace serve` as a real subprocess for integration tests: start, wait ready, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing; what is not durable is lost."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_hard()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_service(
    data_dir: Path,
    store: str,
    *,
    index: str = "brute",
    port: int | None = None,
    wait_ready: bool = True,
    **env: str,
) -> ServiceProcess:
    """Start `grace serve` on a free loopback port and wait until /readyz says ready (or, with
    wait_ready=False, only until the process started)."""
    port = port or free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRACE_")}
    clean.update(env)
    log_path = data_dir.parent / f"service-{port}-{time.monotonic_ns()}.log"
    command = [
        sys.executable,
        "-m",
        "grace_selection.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--store",
        store,
        "--index",
        index,
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=clean)
    service = ServiceProcess(proc, f"http://127.0.0.1:{port}", log_path)
    if not wait_ready:
        return service
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"grace serve exited with {proc.returncode}:\n{service.log_text()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=1.0).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            service.kill_hard()
            raise RuntimeError(f"grace serve not ready after 60 s:\n{service.log_text()}")
        time.sleep(0.1)

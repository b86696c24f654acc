"""Run `grace serve` as a child process on loopback: for the demo, benchmarks and tests.

Stdlib only (readiness is polled with urllib), so anything that has the service installed can
start one without extra dependencies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

REDIS_DEFAULT_PORTS = frozenset({6379, 6399})


def free_loopback_port() -> int:
    """A free TCP port on 127.0.0.1, never one of Redis' usual ports."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in REDIS_DEFAULT_PORTS:
            return port


def stop_child(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """End a child we started, by its pid: SIGTERM, then SIGKILL if it outlives `timeout`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class LocalService:
    """A `grace serve` child: `stop()` ends it by pid (TERM, then KILL); `kill_hard()` is -9."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def __enter__(self) -> LocalService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing; what is not durable is lost."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        stop_child(self.proc, timeout=20)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False


def start_local_service(
    data_dir: Path,
    *,
    store: str = "",
    index: str = "hnsw",
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    wait_ready: bool = True,
    ready_timeout: float = 90.0,
) -> LocalService:
    """Start the service on loopback and (by default) wait until /readyz answers 200.

    env: the child's environment (default: this process's, less GRACE_TOKEN so that a token
    meant for another service does not lock this one).
    """
    port = port or free_loopback_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir / "service.log"
    child_env = (
        dict(env)
        if env is not None
        else {k: v for k, v in os.environ.items() if k != "GRACE_TOKEN"}
    )
    command = [
        sys.executable,
        "-m",
        "grace_selection.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--store",
        store,
        "--index",
        index,
    ]
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=child_env)
    service = LocalService(proc, f"http://127.0.0.1:{port}", log_path)
    if not wait_ready:
        return service
    deadline = time.monotonic() + ready_timeout
    while not service.is_ready():
        if proc.poll() is not None:
            raise RuntimeError(
                f"grace serve exited with code {proc.returncode}; its log ({log_path}) ends:\n"
                f"{service.log_tail()}"
            )
        if time.monotonic() > deadline:
            service.kill_hard()
            raise RuntimeError(
                f"grace serve was not ready after {ready_timeout:.0f} s; its log ends:\n"
                f"{service.log_tail()}"
            )
        time.sleep(0.1)
    return service

"""Run `grace serve` as a child process on loopback: for the demo and local experiments."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx


def free_loopback_port() -> int:
    """A free TCP port on 127.0.0.1, never Redis' usual 6379/6399."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in (6379, 6399):
            return port


@dataclass
class LocalService:
    """A `grace serve` child; `stop()` ends it by pid (TERM, then KILL)."""

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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=20)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_local_service(
    data_dir: Path,
    *,
    store: str = "",
    index: str = "hnsw",
    port: int | None = None,
    ready_timeout: float = 90.0,
    log_path: Path | None = None,
) -> LocalService:
    """Start the service on a free loopback port and wait until /readyz answers 200."""
    port = port or free_loopback_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir / "service.log"
    env = {k: v for k, v in os.environ.items() if k != "GRACE_TOKEN"}
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
        "--log-level",
        "info",
    ]
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    service = LocalService(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"grace serve exited with code {proc.returncode}; its log ({log_path}) ends:\n"
                f"{service.log_tail()}"
            )
        try:
            if httpx.get(f"{service.url}/readyz", timeout=1.0).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(
                f"grace serve was not ready after {ready_timeout:.0f} s; its log ends:\n"
                f"{service.log_tail()}"
            )
        time.sleep(0.1)

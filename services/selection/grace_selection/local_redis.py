"""Run a redis-server of our own on a free loopback port: for tests and benchmarks.

Stdlib only, like `local_service`: readiness is a raw PING, and the server is stopped by its
pid, never by port, so a Redis someone else runs (on 6379, or anywhere) is never touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grace_selection.local_service import free_loopback_port, stop_child


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start; the message says what to do."""


def redis_binary() -> str:
    """The redis-server executable, or a RedisServerError naming the install command."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RedisServerError(
            "redis-server is not installed; run `make install` (it installs it with apt) or "
            "`apt-get install -y --no-install-recommends redis-server`"
        )
    return found


@contextmanager
def start_local_redis(
    workdir: Path, *, append_only: bool = False, timeout: float = 15.0
) -> Iterator[str]:
    """A redis-server on a free loopback port with its files in `workdir`; yields its URL.

    append_only: an AOF with fsync every second, as production runs it (benchmarks); off,
    nothing is persisted (tests).
    """
    port = free_loopback_port()
    args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    args += ["--save", "", "--protected-mode", "yes"]
    args += (
        ["--appendonly", "yes", "--appendfsync", "everysec"]
        if append_only
        else [
            "--appendonly",
            "no",
        ]
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RedisServerError(
                    f"redis-server did not start on 127.0.0.1:{port} within {timeout:.0f} s "
                    f"(exit code {proc.poll()}); run `{args[0]} --port {port}` to see why"
                )
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_child(proc, timeout=10)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False

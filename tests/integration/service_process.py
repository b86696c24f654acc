"""`grace serve` as a real subprocess for integration tests: start, wait ready, kill -9."""

from __future__ import annotations

import os
import time
from pathlib import Path

from grace_selection.local_service import LocalService, start_local_service

ServiceProcess = LocalService


def start_service(
    data_dir: Path,
    store: str,
    *,
    index: str = "brute",
    port: int | None = None,
    wait_ready: bool = True,
    **env: str,
) -> ServiceProcess:
    """Start `grace serve` on a free loopback port with a clean GRACE_* environment (plus `env`)
    and wait until /readyz says ready (or, with wait_ready=False, only until it started)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRACE_")}
    clean.update(env)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return start_local_service(
        data_dir,
        store=store,
        index=index,
        port=port,
        env=clean,
        log_path=data_dir.parent / f"service-{time.monotonic_ns()}.log",
        wait_ready=wait_ready,
        ready_timeout=60.0,
    )

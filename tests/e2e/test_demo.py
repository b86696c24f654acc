"""`grace demo` end to end, shrunk: the fine-tuning task, service on Redis, Ray workers, client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest


@pytest.mark.timeout(900)  # a whole study, shrunk: minutes on a busy 2-core machine
def test_demo_runs_the_whole_loop_on_redis_and_cleans_up(tmp_path: Path, redis_url: str) -> None:
    results, work = tmp_path / "results", tmp_path / "work"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("GRACE_STORE", None)
    started = time.time()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "grace_selection.cli",
            "demo",
            "--train-synsets",
            "150",
            "--held-out-pairs",
            "40",
            "--pretrain-documents",
            "400",
            "--budget",
            "0.3",
            "--threads",
            "1",
            "--results",
            str(results),
            "--work-dir",
            str(work),
            "--store",
            redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    log = run.stderr
    assert "store redis" in (next(work.glob("service-*")) / "service.log").read_text()
    assert "/dashboard" in log

    saved = json.loads((results / "results.json").read_text())
    rows = {r["method"]: r for r in saved["rows"]}
    assert set(rows) == {"grace", "random_per_round", "full_data"}
    # Equal total compute: both methods spend their budget, never more (every cost counted).
    for method in ("grace", "random_per_round"):
        assert 0.28 <= rows[method]["compute_fraction"] <= 0.3 + 1e-9
    assert rows["full_data"]["compute_fraction"] <= 1.0 + 1e-9
    assert set(rows["grace"]["per_stratum"]) <= {"noun", "verb", "adjective", "adverb"}
    curves = {c["method"]: c for c in saved["curves"]}
    grace_rounds = curves["grace"]["rounds"]
    assert [r["round"] for r in grace_rounds] == [0, 1, 2]
    n = curves["full_data"]["rounds"][0]["coreset"]  # full data trains on every pair
    sizes = {r["coreset"] for c in ("grace", "random_per_round") for r in curves[c]["rounds"]}
    assert sizes == {int(0.3 * n + 0.5)}  # one coreset size for both, halves rounded up
    compute = [p[0] for p in curves["grace"]["points"]]
    assert compute == sorted(compute)
    assert compute[-1] <= 0.3 + 1e-9

    table = (results / "results.md").read_text()
    assert "| 0.3 | grace |" in table
    assert "| 0.3 | random_per_round |" in table
    assert "GRACE's held-out loss is" in table
    assert (results / "heldout_loss_vs_compute.png").stat().st_size > 1000

    # Everything the demo started is gone: the service (found by its data folder) and Ray's
    # daemons, which outlive a dead parent as orphans (parent pid 1).
    time.sleep(2)
    leftovers = [
        " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["pid", "ppid", "cmdline", "create_time"])
        if p.info["create_time"] >= started
        and (
            str(work) in " ".join(p.info["cmdline"] or [])
            or (p.info["ppid"] == 1 and "ray" in " ".join(p.info["cmdline"] or []))
        )
    ]
    assert not leftovers, leftovers

"""`grace demo` end to end, shrunk: real text, service on Redis, Ray workers, client, training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil


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
            "--documents",
            "600",
            "--held-out",
            "20",
            "--steps",
            "50",
            "--round-steps",
            "10",
            "--rho",
            "0.3",
            "--budget",
            "0.2",
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
    assert "Redis at redis://" in log
    assert "/dashboard" in log
    assert log.count("grace.demo: round ") == 8  # 4 rounds for each of the two methods

    table = (results / "results.md").read_text()
    assert "GRACE (rho=0.3)" in table
    assert "random per round" in table
    assert (results / "perplexity.png").stat().st_size > 1000
    runs = {r["method"]: r for r in json.loads((results / "results.json").read_text())}
    grace = runs["GRACE (rho=0.3)"]["rounds"]
    assert [r["step"] for r in grace] == [22, 32, 42, 50]  # warm-up: 50 // 4 = 12 steps
    assert all(r["coreset_size"] == 120 for r in grace)
    assert grace[0]["info"]["rescored_fraction"] == 1.0  # warm-up: every sample scored
    assert all(0.2 <= r["info"]["rescored_fraction"] <= 0.4 for r in grace[1:])
    # One warm-up pass plus three partial ones: far below re-scoring everything each round.
    assert runs["GRACE (rho=0.3)"]["scoring_passes_per_n"] < 2.0
    assert runs["random per round"]["scoring_passes_per_n"] == 0.0
    for method in runs.values():
        for record in method["rounds"]:
            assert set(record["perplexity_by_source"]) == {"wordnet", "bible", "fortunes"}

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

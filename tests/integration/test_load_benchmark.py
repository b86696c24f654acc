"""benchmarks/load.py, shrunk to 30 s: readers, producers and rounds at once, no errors.

The full run (200k x 32, 5 minutes) is a benchmark (docs/results/load.md); this one checks
that the harness and the service hold together under the same mix: 16 readers, 4 producers,
rounds triggered while they run, a report with every field the issue names.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_load_benchmark_shrunk_to_30_seconds_has_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "load.py"),
        "--seconds", "30",
        "--n", "20000",
        "--round-every", "10",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=360, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == 0, report["errors_by_part"]
    assert report["indices"]["requests"] > 1000
    assert 0 < report["indices"]["p50_ms"] <= report["indices"]["p99_ms"]
    assert report["indices"]["while_computing"]["requests"] > 0  # reads went on during rounds
    assert report["ingest"]["samples_per_s"] > 0
    assert report["ingest"]["batches"] > 10
    published = [r for r in report["rounds"] if r["status"] == "published"]
    assert published, report["rounds"]
    assert report["rss_mb_start"] > 0
    assert report["rss_mb_end"] > 0
    # Loose here (30 s holds the first rebuild's growth); the 5-minute run's goal is < 5 %.
    assert report["rss_drift"] < 0.5

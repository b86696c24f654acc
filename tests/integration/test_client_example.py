"""examples/train_tiny_lm.py runs end to end against a real service, and resumes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from grace_lab.debian_corpus import CorpusSourceMissingError, read_fortunes
from tests.integration.service_process import start_service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_tiny_lm.py"


def _run(url: str, work: Path, *extra: str) -> dict[str, object]:
    command = [
        sys.executable,
        str(EXAMPLE),
        "--service",
        url,
        "--work-dir",
        str(work),
        "--per-source",
        "150",
        "--eval-per-source",
        "20",
        "--batch-size",
        "8",
        "--rescore-every",
        "6",
        "--wait-for-rounds",  # a fast machine would otherwise finish before round 1 is out
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert isinstance(summary, dict)
    return summary


@pytest.mark.slow
def test_the_example_trains_reports_and_resumes(tmp_path: Path) -> None:
    try:
        next(read_fortunes())
    except CorpusSourceMissingError as exc:
        pytest.fail(str(exc))  # the message names the Debian package to install
    service = start_service(tmp_path / "data", "")
    try:
        first = _run(service.url, tmp_path / "work", "--steps", "14")
        assert first["steps"] == 14
        assert first["dropped_samples"] == 0
        assert first["reported_samples"] == first["trained_samples"]  # every loss arrived
        assert isinstance(first["round"], int)
        assert first["round"] >= 1  # a rescored round was published and picked up
        again = _run(service.url, tmp_path / "work", "--steps", "4", "--resume")
        assert again["steps"] == 18
        perplexity = again["perplexity"]
        assert isinstance(perplexity, float)
        assert perplexity < 2048  # better than uniform over the vocabulary
    finally:
        service.stop()

"""The workers' subcommands: wired into `grace`, build-dataset end to end, errors for people."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grace_selection.cli import build_parser
from grace_workers.cli import main, run_build_dataset, run_score
from grace_workers.dataset import TokenDataset


def test_grace_has_the_worker_subcommands() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["score", "--job", "j", "--round", "2", "--data", "d", "--workers", "3",
         "--gpus-per-worker", "0.5"]
    )  # fmt: skip
    assert args.func is run_score
    assert (args.job, args.round, args.workers, args.gpus_per_worker) == ("j", 2, 3, 0.5)
    assert args.address is None  # a local Ray unless told otherwise
    args = parser.parse_args(["build-dataset", "--jsonl", "x", "--out", "y", "--vocab-size", "9"])
    assert args.func is run_build_dataset


def test_build_dataset_command_writes_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [f"sample number {i} says hello to the world of {i % 7} cats" for i in range(40)]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "stratum": i % 2}) + "\n" for i, t in
                             enumerate(texts)))  # fmt: skip
    code = main(["build-dataset", "--jsonl", str(jsonl), "--out", str(tmp_path / "ds"),
                 "--vocab-size", "300"])  # fmt: skip
    assert code == 0
    assert "40 samples" in capsys.readouterr().out
    ds = TokenDataset.open(tmp_path / "ds")
    assert len(ds) == 40
    np.testing.assert_array_equal(ds.strata, np.arange(40) % 2)


def test_build_dataset_command_reports_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"body": "no text field"}\n')
    code = main(["build-dataset", "--jsonl", str(jsonl), "--out", str(tmp_path / "ds"),
                 "--vocab-size", "300"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "--text-field" in err


def test_the_help_constants_are_the_builders() -> None:
    from grace_workers import cli, dataset_builder

    assert cli.BPE_MIN_VOCAB == dataset_builder.BPE_MIN_VOCAB

"""The real `grace` entry point in a subprocess: a mistake is one line and exit 2, never a trace.

`grace score` is checked against a real `grace serve` (with a token) and against a port where
nothing listens; each mistake must be caught before Ray starts, which the tests see in the
time taken and in a Ray temp folder that stays empty.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from grace_client import CoresetClient
from grace_proto.models import CreateJobRequest
from grace_selection.local_service import free_loopback_port
from grace_workers.dataset import TokenDataset, write_dataset
from tests.integration.service_process import ServiceProcess, start_service

GRACE = shutil.which("grace", path=str(Path(sys.executable).parent)) or "grace"
TOKEN = "cli-test-token"
N = 12


def run_grace(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[
    int, str, str, float
]:  # fmt: skip
    """(exit code, stdout, stderr, seconds) of the installed `grace` script."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRACE_")}
    clean.update(env or {})
    started = time.monotonic()
    done = subprocess.run(
        [GRACE, *args], capture_output=True, text=True, env=clean, timeout=timeout, check=False
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def assert_one_line(code: int, err: str, command: str, *needles: str) -> str:
    """Exit 2, and stderr is exactly one line: `grace CMD: error: ...` naming every needle."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"grace {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> TokenDataset:
    root = tmp_path_factory.mktemp("data")
    return write_dataset(root / "tokens", [np.array([1, 2, 3])] * N, vocab_size=8)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_service(tmp_path_factory.mktemp("service") / "data", "", GRACE_TOKEN=TOKEN)
    try:
        with CoresetClient(process.url, token=TOKEN, retries=1) as client:
            client.create_job(CreateJobRequest(job_id="cli-job", n_samples=N, dim=4))
            client.create_job(CreateJobRequest(job_id="cli-big", n_samples=N + 1, dim=4))
        yield process
    finally:
        process.stop()


def test_build_dataset_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "fine text here"}\n{"body": "no text"}\n')
    args = ["build-dataset", "--jsonl", str(jsonl), "--out", str(tmp_path / "ds"),
            "--vocab-size", "300"]  # fmt: skip
    code, _, err, _ = run_grace(*args)
    assert_one_line(code, err, "build-dataset", f"{jsonl}:2", "--text-field")
    code, _, err, _ = run_grace(*args, "--debug")
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("grace build-dataset: error: ")
    assert not (tmp_path / "ds").exists()


def test_build_dataset_says_it_raised_the_vocab_size(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    rows = [{"text": f"line {i} of a small corpus", "source": ["kjv", "code"][i % 2]}
            for i in range(20)]  # fmt: skip
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err, _ = run_grace(
        "build-dataset", "--input", str(jsonl), "--out", str(tmp_path / "ds"),
        "--vocab-size", "5", "--stratum-field", "source",
    )  # fmt: skip
    assert code == 0, err
    assert "vocab size 5 is below the 257" in err
    assert "raised to 257" in err
    assert "vocab 257" in out
    assert "strata 0=code, 1=kjv" in out
    assert TokenDataset.open(tmp_path / "ds").vocab_size == 257


def test_score_against_an_unreachable_url_fails_before_ray_starts(
    tmp_path: Path, dataset: TokenDataset
) -> None:
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    url = f"http://127.0.0.1:{free_loopback_port()}"
    code, _, err, seconds = run_grace(
        "score", "--job", "j", "--round", "0", "--data", str(dataset.path), "--model", __file__,
        "--url", url, env={"RAY_TMPDIR": str(ray_tmp)},
    )  # fmt: skip
    assert_one_line(code, err, "score", f"cannot reach the GRACE service at {url}", "--url")
    assert seconds < 20, seconds  # imports and one refused connection, no Ray start (5-15 s)
    assert list(ray_tmp.iterdir()) == []  # Ray never made its session folder


def test_score_refuses_a_url_that_is_not_the_service(tmp_path: Path, dataset: TokenDataset) -> None:
    port = free_loopback_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        code, _, err, _ = run_grace(
            "score", "--job", "j", "--round", "0", "--data", str(dataset.path),
            "--model", __file__, "--url", f"http://127.0.0.1:{port}",
        )  # fmt: skip
    finally:
        other.kill()
        other.wait()
    assert_one_line(code, err, "score", "does not answer as a GRACE service", "404", "--url")


def test_score_checks_the_data_first(tmp_path: Path) -> None:
    code, _, err, _ = run_grace(
        "score", "--job", "j", "--round", "0", "--data", str(tmp_path / "nowhere")
    )
    assert_one_line(code, err, "score", "no meta.json", "grace build-dataset")


@pytest.mark.parametrize(
    ("job", "round_", "token", "model", "needles"),
    [
        ("cli-job", 0, "wrong", True, ("refuses the token", "not the service's", "GRACE_TOKEN")),
        ("cli-job", 0, None, True, ("refuses the token", "no token was given", "--token")),
        ("nope", 0, TOKEN, True, ("job 'nope' does not exist", "--job")),
        ("cli-big", 0, TOKEN, True, ("has 13 samples but the dataset", "has 12")),
        ("cli-job", 3, TOKEN, True, ("--round 3", "round 2", "score round 0 first")),
        ("cli-job", 0, TOKEN, False, ("no published checkpoint", "--model")),
    ],
)
def test_score_checks_token_job_round_and_model_before_ray(
    service: ServiceProcess,
    dataset: TokenDataset,
    tmp_path: Path,
    job: str,
    round_: int,
    token: str | None,
    model: bool,
    needles: tuple[str, ...],
) -> None:
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    args = ["score", "--job", job, "--round", str(round_), "--data", str(dataset.path),
            "--url", service.url] + (["--model", __file__] if model else [])  # fmt: skip
    env = {"RAY_TMPDIR": str(ray_tmp)} | ({"GRACE_TOKEN": token} if token else {})
    code, _, err, seconds = run_grace(*args, env=env)
    assert_one_line(code, err, "score", *needles)
    assert seconds < 20, seconds
    assert list(ray_tmp.iterdir()) == []
    if token == "wrong":
        assert "wrong" not in err  # the token is never echoed


def test_serve_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    code, _, err, _ = run_grace("serve", "--data-dir", str(a_file / "data"))
    assert_one_line(code, err, "serve", f"--data-dir {a_file / 'data'}", "cannot write there")
    code, _, err, _ = run_grace("serve", "--store", "mongodb://x", "--data-dir", str(tmp_path))
    assert_one_line(code, err, "serve", "--store / GRACE_STORE = 'mongodb://x'", "redis://")
    code, _, err, _ = run_grace("serve", "--data-dir", str(tmp_path), env={"GRACE_PORT": "70000"})
    assert_one_line(code, err, "serve", "--port / GRACE_PORT = '70000'", "65535")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code, _, err, _ = run_grace("serve", "--data-dir", str(tmp_path), "--port", str(port))
    assert_one_line(code, err, "serve", f"127.0.0.1:{port} is in use", "--port")
    code, _, err, _ = run_grace("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert_one_line(code, err, "serve", "without a token", "GRACE_TOKEN")


def test_a_missing_extra_names_the_pip_command(tmp_path: Path) -> None:
    """A client-only install has `grace` but not pydantic_settings: here the module is made
    unimportable in a real process, as it is where the service extra is not installed."""
    program = (
        "import sys; sys.modules['pydantic_settings'] = None; "
        "from grace_selection.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "serve", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert_one_line(
        done.returncode, done.stderr, "serve", "'pydantic_settings'",
        "pip install 'grace-coresets[service]'",
    )  # fmt: skip


def test_version_and_help(tmp_path: Path) -> None:
    from importlib.metadata import version

    code, out, _, _ = run_grace("--version")
    assert code == 0
    assert out.startswith(f"grace {version('grace-coresets')} ")
    code, out, _, _ = run_grace("score", "--help")
    assert code == 0
    assert "(default: 32)" in out
    assert "example:\n  grace score --job" in out

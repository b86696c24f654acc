"""GraceTrainer under `accelerate launch` with 2 real processes (gloo on CPU), a real service.

The processes (accelerate_trainer.py) train a tiny GPT-2 on the job's coreset with a switch
every 2 steps, publish round 1 mid-epoch, log through Trainer.log and resume from a
checkpoint; this test checks what each rank trained and logged against the service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grace_client import CoresetClient
from grace_proto.models import CreateJobRequest, SelectionConfigModel
from tests.conftest import free_port
from tests.integration.service_process import ServiceProcess, start_service

SCRIPT = Path(__file__).with_name("accelerate_trainer.py")
REPO = Path(__file__).resolve().parents[2]
N, DIM, JOB = 160, 8, "accel"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    process = start_service(tmp_path / "data", "")
    try:
        yield process
    finally:
        process.stop()


def publish_round_zero(client: CoresetClient) -> None:
    client.create_job(
        CreateJobRequest(
            job_id=JOB,
            n_samples=N,
            dim=DIM,
            seed=3,
            config=SelectionConfigModel(budget_fraction=0.3, k=5, rescore_fraction=0.3),
        )
    )
    rng = np.random.default_rng(0)
    ids = np.arange(N)
    vectors = rng.normal(size=(8, DIM))[rng.integers(0, 8, N)] + 0.2 * rng.normal(size=(N, DIM))
    client.post_embeddings(JOB, ids, vectors, batch_id="warm-e", round=0)
    client.post_scores(JOB, ids, importance=rng.random(N), round=0, batch_id="warm-s")
    client.trigger_round(JOB)
    client.wait_for_round(JOB, 0, timeout=60)


def launch(url: str, out: Path) -> list[dict[str, Any]]:
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a shared 2-core machine
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",  # "start N processes" (torchrun); the script's use_cpu makes it gloo
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={free_port()}",
        str(SCRIPT),
        url,
        JOB,
        str(out),
    ]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_grace_trainer_under_accelerate_launch_with_two_processes(
    service: ServiceProcess, tmp_path: Path
) -> None:
    with CoresetClient(service.url, cache_dir=tmp_path / "cache") as client:
        publish_round_zero(client)
        ranks = launch(service.url, tmp_path / "out")
        round0 = set(client.get_indices(JOB, 0).indices.tolist())
        round1 = set(client.get_indices(JOB, 1).indices.tolist())
        manifest1 = client.get_round(JOB, 1)

    for rank, result in enumerate(ranks):
        # Before the process group: the launcher's RANK/WORLD_SIZE, so a clear refusal.
        assert f"RANK={rank} and WORLD_SIZE=2 are set" in result["refused"]
        assert (result["rank"], result["world"]) == (rank, 2)
        assert result["sampler"] == [rank, 2]
        steps = [step for step, _ in result["batches"]]
        assert steps == list(range(8))  # one batch per step: the epoch was not cut short
        # Switch points every 8 samples; round 1 arrived after step 2, so position 16 took it.
        for step, ids in result["batches"]:
            assert set(ids) <= (round0 if step < 4 else round1), (rank, step, ids)
        assert result["sent"] == 32  # every trained sample's loss reached the service
        # The resumed run trained on exactly what the first run trained from step 3 on.
        assert result["resumed"] == [b for b in result["batches"] if b[0] >= 3]

    # The ranks split each round between them: together, the whole slice of round 0.
    epoch0 = [i for r in ranks for step, ids in r["batches"] if step < 4 for i in ids]
    assert len(epoch0) == 32
    assert set(epoch0) <= round0
    first_rank = {i for step, ids in ranks[0]["batches"] if step < 4 for i in ids}
    other_rank = {i for step, ids in ranks[1]["batches"] if step < 4 for i in ids}
    assert len(first_rank & other_rank) <= 1  # at most world - 1 ids on two ranks

    logs = {entry["step"]: entry for entry in ranks[0]["logs"] if "loss" in entry}
    assert sorted(logs) == list(range(1, 9))
    for step, entry in logs.items():
        assert entry["grace/round"] == (0 if step <= 4 else 1)
        assert entry["grace/coreset_size"] == len(round0) == len(round1) == 48
        assert entry["grace/service_reachable"] == 1.0
    assert "grace/churn" not in logs[1]
    assert logs[5]["grace/churn"] == pytest.approx(manifest1.churn)
    assert logs[5]["grace/rescored_fraction"] == pytest.approx(manifest1.rescored_fraction)
    assert 0 < manifest1.rescored_fraction < 1

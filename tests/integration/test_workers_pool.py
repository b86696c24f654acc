"""Scoring workers on the shared local Ray cluster against a real `grace serve` with Redis.

A tiny GPT trained for a few steps on real text (fortune cookies from the Debian package),
tokenized with a BPE trained here, scores whole rounds; an actor is SIGKILLed in the middle of
its shard, and the service's own counts show that nothing was applied twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from grace_client import CoresetClient
from grace_lab.debian_corpus import read_fortunes
from grace_lab.lm_training import collate, make_optimizer, train_step
from grace_proto.models import CreateJobRequest, SelectionConfigModel
from grace_workers.dataset import TokenDataset, write_dataset
from grace_workers.dataset_builder import build_dataset, train_bpe_tokenizer
from grace_workers.pool import PoolSettings, ScoringError, ScoringPool
from grace_workers.scoring import score_batch
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig, save_tiny_gpt
from grace_workers.worker import ScoringWorker, WorkerSettings
from tests.integration.service_process import ServiceProcess, start_service

N_SAMPLES, DIM, BATCH = 96, 16, 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TokenDataset]:
    """A JSONL file of real short texts and its tokenized dataset."""
    root = tmp_path_factory.mktemp("corpus")
    texts = [t for t in read_fortunes() if 30 <= len(t) <= 160][:N_SAMPLES]
    jsonl = root / "fortunes.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tokenizer = train_bpe_tokenizer(texts, vocab_size=400)
    return jsonl, build_dataset(jsonl, root / "tokens", tokenizer)


@pytest.fixture(scope="module")
def checkpoints(
    corpus: tuple[Path, TokenDataset], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(untrained, trained) TinyGPT checkpoints: the trained one has a lower loss."""
    _, ds = corpus
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = TinyGPTConfig(vocab_size=ds.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=32)
    model = TinyGPT(config)
    untrained = save_tiny_gpt(model, root / "untrained.pt", step=0)
    optimizer = make_optimizer(model, lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(40):
        ids, mask = collate(ds, rng.choice(len(ds), 16, replace=False), config.block_size)
        train_step(model, optimizer, ids, mask)
    return untrained, save_tiny_gpt(model, root / "trained.pt", step=40)


@pytest.fixture(scope="module")
def service(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    # Module scope: one service for these tests (each uses its own job on the session's Redis).
    process = start_service(tmp_path_factory.mktemp("service") / "data", redis_server)
    try:
        yield process
    finally:
        process.stop()


def create_job(service: ServiceProcess, job: str, tmp_path: Path) -> CoresetClient:
    client = CoresetClient(service.url, retries=2, cache_dir=tmp_path / "cache")
    config = SelectionConfigModel(budget_fraction=0.25, k=5, rescore_fraction=0.25)
    client.create_job(
        CreateJobRequest(job_id=job, n_samples=N_SAMPLES, dim=DIM, seed=3, config=config)
    )
    return client


def settings_for(
    service: ServiceProcess, job: str, data: Path, model: Path | None
) -> WorkerSettings:
    return WorkerSettings(
        service_url=service.url,
        job=job,
        data_path=str(data),
        model_path=None if model is None else str(model),
        batch_size=BATCH,
        retries=2,
        backoff_cap=0.5,
    )


def reference_scores(
    model_path: Path, ds: TokenDataset, ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    from grace_workers.checkpoints import load_model

    model = load_model(model_path).model
    input_ids, mask = collate(ds, ids, 48)
    scores = score_batch(model, input_ids, mask)
    return scores.loss.numpy(), scores.importance.numpy()


def test_rounds_are_scored_once_with_the_published_checkpoint(
    ray_cluster: Any,
    service: ServiceProcess,
    corpus: tuple[Path, TokenDataset],
    checkpoints: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    _, ds = corpus
    untrained, trained = checkpoints
    client = create_job(service, "pool-rounds", tmp_path)
    # The trainer publishes the checkpoint; the fallback --model (untrained) must not be used.
    client.put_checkpoint("pool-rounds", str(trained), step=40)
    worker = settings_for(service, "pool-rounds", ds.path, untrained)
    with ScoringPool(worker, PoolSettings(workers=2, progress=False)) as pool:
        assert len({info["pid"] for info in pool.actor_info}) == 2
        assert {info["device"] for info in pool.actor_info} == {"cpu"}  # no GPU: CPU at once
        warm = pool.score_round(0)
        job = client.get_job("pool-rounds")
        assert (job.embedded_count, job.scored_count) == (N_SAMPLES, N_SAMPLES)
        assert warm.samples == N_SAMPLES
        assert sum(s.accepted for s in warm.shards) == N_SAMPLES
        assert warm.duplicates == 0
        assert {(s.checkpoint_path, s.checkpoint_step) for s in warm.shards} == {(str(trained), 40)}
        assert len({s.pid for s in warm.shards}) == 2  # both actors took shards
        # What the service stored is what the trained model gives, computed here.
        probe = np.array([0, 17, 50, 95], dtype=np.int64)
        loss, importance = reference_scores(trained, ds, probe)
        for i, sample in enumerate(probe.tolist()):
            stored = client.get_sample("pool-rounds", sample)
            assert stored.scored_round == 0
            assert stored.loss == pytest.approx(float(loss[i]), rel=1e-4)
            assert stored.importance == pytest.approx(float(importance[i]), rel=1e-4)
        client.trigger_round("pool-rounds")
        client.wait_for_round("pool-rounds", 0, timeout=60)
        plan = client.get_rescore_plan("pool-rounds", 1).ids
        assert 0 < plan.size < N_SAMPLES
        second = pool.score_round(1)
        assert second.samples == plan.size
    job = client.get_job("pool-rounds")
    assert (job.embedded_count, job.scored_count) == (N_SAMPLES, N_SAMPLES)  # distinct samples
    rounds = {client.get_sample("pool-rounds", int(i)).scored_round for i in plan[:5]}
    assert rounds == {1}


def test_input_embeddings_need_no_forward_pass_and_still_make_a_round(
    ray_cluster: Any,
    service: ServiceProcess,
    corpus: tuple[Path, TokenDataset],
    checkpoints: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """--embedding input: every sample gets an embedding (the mean of its input token
    embeddings), none gets a score, and the service publishes a round from the graph alone."""
    _, ds = corpus
    _, trained = checkpoints
    client = create_job(service, "pool-input", tmp_path)
    worker = dataclasses.replace(
        settings_for(service, "pool-input", ds.path, trained), embedding="input"
    )
    with ScoringPool(worker, PoolSettings(workers=1, progress=False)) as pool:
        report = pool.score_round(0)
    assert report.samples == N_SAMPLES
    job = client.get_job("pool-input")
    assert (job.embedded_count, job.scored_count) == (N_SAMPLES, 0)
    client.trigger_round("pool-input")
    manifest = client.wait_for_round("pool-input", 0, timeout=60)
    assert manifest.count == round(0.25 * N_SAMPLES)


class KillOnceWorker(ScoringWorker):
    """SIGKILLs its own process after posting its second batch, once per test (a marker file
    outlives the process, so the restarted actor does not do it again)."""

    marker = Path("/nonexistent")  # set per test, before the class is shipped to Ray

    def post_batch(
        self, key: str, round_: int, step: int, ids: Any, arrays: Any
    ) -> tuple[int, int]:
        result = super().post_batch(key, round_, step, ids, arrays)
        if ":b1:" in key:
            try:  # "x" creates atomically: of two actors racing here, exactly one dies
                with self.marker.open("x") as fh:
                    fh.write(f"{os.getpid()} {key}\n")
            except FileExistsError:
                return result
            os.kill(os.getpid(), signal.SIGKILL)
        return result


def test_an_actor_killed_mid_shard_changes_nothing_twice(
    ray_cluster: Any,
    service: ServiceProcess,
    corpus: tuple[Path, TokenDataset],
    checkpoints: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, ds = corpus
    _, trained = checkpoints
    client = create_job(service, "pool-kill", tmp_path)
    marker = tmp_path / "killed"
    # The class attribute travels with the pickled class to the actor processes.
    monkeypatch.setattr(KillOnceWorker, "marker", marker)
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    worker = settings_for(service, "pool-kill", ds.path, trained)
    pool_settings = PoolSettings(workers=2, shards=2, max_restarts=1, max_task_retries=1)
    with ScoringPool(worker, pool_settings, worker_cls=KillOnceWorker) as pool:
        first_pids = {info["pid"] for info in pool.actor_info}
        report = pool.score_round(0)
    killed_pid = int(marker.read_text().split()[0])
    assert killed_pid in first_pids
    killed_shard = next(s for s in report.shards if s.pid not in first_pids)  # a restarted actor
    # The rerun re-sent batches 0 and 1 (embeddings and scores): the service had all four.
    assert killed_shard.duplicates == 4
    assert sum(s.accepted for s in report.shards) == N_SAMPLES - 2 * BATCH
    job = client.get_job("pool-kill")
    assert (job.embedded_count, job.scored_count) == (N_SAMPLES, N_SAMPLES)


class AlwaysFailingWorker(ScoringWorker):
    def score_shard(self, round_: int, shard: int, of: int) -> Any:
        raise RuntimeError(f"disk on fire while scoring shard {shard}")


def test_a_shard_that_keeps_failing_stops_the_round_with_the_actors_error(
    ray_cluster: Any,
    service: ServiceProcess,
    corpus: tuple[Path, TokenDataset],
    checkpoints: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    _, ds = corpus
    _, trained = checkpoints
    create_job(service, "pool-fail", tmp_path)
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    worker = settings_for(service, "pool-fail", ds.path, trained)
    settings = PoolSettings(workers=2, shards=3, shard_attempts=2, progress=False)
    with (
        ScoringPool(worker, settings, worker_cls=AlwaysFailingWorker) as pool,
        pytest.raises(ScoringError, match=r"failed 2 times(.|\n)*disk on fire"),
    ):
        pool.score_round(0)
    # A dataset that is not the job's fails at once: retrying cannot fix it.
    small = write_dataset(tmp_path / "small", [np.array([1, 2, 3])] * 5, vocab_size=ds.vocab_size)
    wrong = settings_for(service, "pool-fail", small.path, trained)
    with (
        ScoringPool(wrong, PoolSettings(workers=1, progress=False)) as pool,
        pytest.raises(ScoringError, match=r"retrying cannot help(.|\n)*has 96 samples"),
    ):
        pool.score_round(0)


def test_grace_score_cli_runs_a_round_on_an_existing_cluster(
    ray_cluster: Any,
    service: ServiceProcess,
    corpus: tuple[Path, TokenDataset],
    checkpoints: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    _, ds = corpus
    _, trained = checkpoints
    client = create_job(service, "pool-cli", tmp_path)
    address = ray_cluster.get_runtime_context().gcs_address
    command = [
        sys.executable, "-m", "grace_selection.cli", "score",
        "--job", "pool-cli", "--round", "0", "--data", str(ds.path), "--model", str(trained),
        "--workers", "1", "--address", address, "--url", service.url, "--batch-size", "16",
        "--no-progress", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert (report["samples"], report["duplicates"]) == (N_SAMPLES, 0)
    assert report["samples_per_second"] > 0
    job = client.get_job("pool-cli")
    assert (job.embedded_count, job.scored_count) == (N_SAMPLES, N_SAMPLES)

"""The client, sampler and reporter against the real service (`grace serve` as a subprocess).

One job goes through the whole loop a trainer sees: warm-up scores, round 0, training with
the sampler while reporting losses, round 1 picked up by the sampler, the service killed
and restarted under a running sampler.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from grace_client import (
    ConflictError,
    CoresetClient,
    GraceAPIError,
    NotFoundError,
    ServiceUnavailable,
)
from grace_client.order import slice_coreset
from grace_client.sampler import CoresetSampler
from grace_proto.models import CreateJobRequest, RoundStatus, SelectionConfigModel
from tests.integration.service_process import ServiceProcess, start_service

N, DIM, SEED = 400, 8, 5


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    process = start_service(tmp_path / "data", "")
    try:
        yield process
    finally:
        process.stop()


def client_for(url: str, tmp_path: Path) -> CoresetClient:
    return CoresetClient(
        url, retries=2, cache_dir=tmp_path / "cache", backoff_base=0.02, backoff_cap=0.1
    )


def warm_up(client: CoresetClient, job: str) -> None:
    """Create the job, score every sample once (the worker's part) and publish round 0."""
    client.create_job(
        CreateJobRequest(
            job_id=job,
            n_samples=N,
            dim=DIM,
            seed=SEED,
            config=SelectionConfigModel(budget_fraction=0.25, k=5, rescore_fraction=0.3),
        )
    )
    plan = client.get_rescore_plan(job, 0)
    assert plan.ids.tolist() == list(range(N))
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(12, DIM))
    vectors = centers[rng.integers(0, 12, N)] + 0.2 * rng.normal(size=(N, DIM))
    client.post_embeddings(job, plan.ids, vectors, batch_id="warm-e", round=0)
    client.post_scores(job, plan.ids, importance=rng.random(N), round=0, batch_id="warm-s")
    assert client.trigger_round(job).status == RoundStatus.COMPUTING
    assert client.wait_for_round(job, 0, timeout=120).status == RoundStatus.PUBLISHED


def next_round(client: CoresetClient, job: str, r: int) -> None:
    plan = client.get_rescore_plan(job, r)
    assert 0 < plan.ids.shape[0] <= N
    scores = np.random.default_rng(r).random(plan.ids.shape[0])
    client.post_scores(job, plan.ids, importance=scores, round=r, batch_id=f"plan-{r}")
    client.trigger_round(job)
    client.wait_for_round(job, r, timeout=120)


@pytest.mark.slow
def test_a_trainer_runs_the_loop_against_the_real_service(
    service: ServiceProcess, tmp_path: Path
) -> None:
    with client_for(service.url, tmp_path) as client:
        assert client.healthz().status == "ok"
        assert client.readyz().status == "ok"
        warm_up(client, "loop")
        manifest = client.get_round("loop", "latest")
        coreset = np.sort(client.get_indices("loop", 0).indices)  # world=1: sha verified
        assert manifest.count == coreset.shape[0] == 100

        # The service slices exactly by the documented rule, which the client states too.
        order = coreset[np.random.default_rng([manifest.seed, 0]).permutation(coreset.shape[0])]
        for world in (1, 3, 7):
            for rank in range(world):
                piece = client.get_indices("loop", 0, rank, world)
                assert piece.indices.tolist() == slice_coreset(order, rank, world).tolist()
                assert len(piece) == math.ceil(100 / world)
                assert piece.weights is not None

        # Two trainer ranks train one epoch each and report their losses.
        seen: list[int] = []
        for rank in range(2):
            sampler = CoresetSampler(
                client, "loop", rank=rank, world=2, seed=1, consensus=False, prefetch=False
            )
            reporter = client.reporter("loop", rank=rank, round=lambda s=sampler: s.round)
            epoch = list(sampler)
            seen += epoch
            reporter.report(epoch, np.full(len(epoch), 0.5 + rank), step=0)
            stats = reporter.close(timeout=30)
            assert stats.sent_samples == len(epoch)
            assert stats.failed_batches == 0
        assert set(seen) == set(coreset.tolist())
        sample = client.get_sample("loop", int(coreset[0]))
        assert sample.loss in (0.5, 1.5)

        # Round 1: the sampler picks it up at its next epoch.
        sampler = CoresetSampler(client, "loop", seed=1, consensus=False, prefetch=False)
        assert sorted(sampler) == coreset.tolist()
        next_round(client, "loop", 1)
        sampler.poll()
        fresh = sorted(sampler)
        assert sampler.round == 1
        assert fresh == sorted(client.get_indices("loop", 1).indices.tolist())
        assert client.get_round_stats("loop", 1).count == len(fresh)


def test_the_services_4xx_messages_reach_the_caller(
    service: ServiceProcess, tmp_path: Path
) -> None:
    with client_for(service.url, tmp_path) as client:
        client.create_job(CreateJobRequest(job_id="errs", n_samples=10, dim=4))
        with pytest.raises(GraceAPIError) as info:
            client.post_scores("errs", [3, 250], loss=[1.0, 2.0], round=0, batch_id="bad-ids")
        err = info.value
        assert (err.status, err.error, err.field) == (422, "invalid_field", "arrays.ids")
        assert "250" in err.detail  # the server's own sentence, naming the bad id
        assert "250" in str(err)
        with pytest.raises(NotFoundError) as missing:
            client.get_job("no-such-job")
        assert "no-such-job" in missing.value.detail
        with pytest.raises(ConflictError, match="different spec"):
            client.create_job(CreateJobRequest(job_id="errs", n_samples=11, dim=4))
        assert client.get_checkpoint("errs") is None
        info_ckpt = client.put_checkpoint("errs", "/tmp/ckpt-3", 3, round=1)
        assert client.get_checkpoint("errs") == info_ckpt


@pytest.mark.slow
def test_the_sampler_rides_out_a_service_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    first = start_service(data, "")
    port = int(first.url.rsplit(":", 1)[1])
    try:
        with client_for(first.url, tmp_path) as client:
            warm_up(client, "outage")
            sampler = CoresetSampler(client, "outage", seed=2, consensus=False, prefetch=False)
            round0 = sorted(sampler)
            first.kill_hard()
            with caplog.at_level(logging.WARNING, logger="grace_client"):
                sampler.poll()
                assert sorted(sampler) == round0  # training goes on; no step waited
                # A trainer that restarts now starts from the cache, loudly.
                restarted = CoresetSampler(
                    client, "outage", seed=2, consensus=False, prefetch=False
                )
                assert restarted.round == 0
            assert not sampler.service_reachable
            assert "SERVICE UNREACHABLE" in caplog.text
            with pytest.raises(ServiceUnavailable):
                client.get_job("outage")

            second = start_service(data, "", port=port)
            try:
                next_round(client, "outage", 1)
                sampler.poll()
                assert sampler.service_reachable
                assert sorted(sampler) == sorted(client.get_indices("outage", 1).indices.tolist())
            finally:
                second.stop()
    finally:
        first.stop()

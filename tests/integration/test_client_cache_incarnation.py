"""The client's disk cache never serves a coreset of another life of a job id (issue 14).

It used to be keyed by job id and round alone: after `delete_job` and a new job under the same
id, or against a fresh service that reuses an id, `wait_for_round(job, 0)` and
`get_indices(job, 0)` returned the old round, the stale manifest and slice agreeing with each
other. Real `grace serve` processes, a real client and its disk cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grace_client import CoresetClient
from grace_client.payloads import sha256_of_sorted
from grace_proto.models import CreateJobRequest, RoundManifest
from tests.integration.service_process import start_service

JOB, N, DIM = "reused", 400, 8


def publish_round_zero(client: CoresetClient, seed: int) -> RoundManifest:
    """A job whose round 0 depends on `seed` (its importance scores)."""
    rng = np.random.default_rng(seed)
    client.create_job(CreateJobRequest(job_id=JOB, n_samples=N, dim=DIM))
    ids = np.arange(N)
    client.post_embeddings(JOB, ids, rng.normal(size=(N, DIM)), batch_id=f"e{seed}", round=0)
    client.post_scores(JOB, ids, importance=rng.random(N), round=0, batch_id=f"s{seed}")
    client.trigger_round(JOB)
    return client.wait_for_round(JOB, 0, timeout=60)


def test_a_job_created_again_under_its_id_is_not_served_from_the_old_cache(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    with start_service(tmp_path / "a", "") as service:
        with CoresetClient(service.url, cache_dir=cache, retries=1) as client:
            first = publish_round_zero(client, seed=1)
            old = client.get_indices(JOB, 0, rank=0, world=2)
            client.delete_job(JOB)
            second = publish_round_zero(client, seed=2)
            assert second.job_incarnation != first.job_incarnation
            assert second.indices_sha256 != first.indices_sha256
        # A new client process on the same cache, as a restarted trainer would be.
        with CoresetClient(service.url, cache_dir=cache, retries=1) as client:
            assert client.wait_for_round(JOB, 0, timeout=10).indices_sha256 == second.indices_sha256
            new = client.get_indices(JOB, 0, rank=0, world=2)
            assert new.job_incarnation == second.job_incarnation
            assert not np.array_equal(new.indices, old.indices)
            whole = client.get_indices(JOB, 0)
            assert sha256_of_sorted(whole.indices) == second.indices_sha256

    # A fresh service (empty store) that reuses the id: its round 0 is yet another one.
    with (
        start_service(tmp_path / "b", "") as service,
        CoresetClient(service.url, cache_dir=cache, retries=1) as client,
    ):
        third = publish_round_zero(client, seed=3)
        assert client.get_round(JOB, 0).indices_sha256 == third.indices_sha256
        piece = client.get_indices(JOB, 0)
        assert sha256_of_sorted(piece.indices) == third.indices_sha256
        assert third.job_incarnation not in (first.job_incarnation, second.job_incarnation)

    # The service is gone: the cache serves the incarnation the server named last.
    with CoresetClient(service.url, cache_dir=cache, retries=0) as client:
        offline = client.get_indices(JOB, 0)
        assert sha256_of_sorted(offline.indices) == third.indices_sha256
        assert client.get_round(JOB, 0).job_incarnation == third.job_incarnation

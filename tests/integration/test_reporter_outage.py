"""The reporter's backlog drains in full-size batches when the service comes back (issue 14).

It used to send one request per queued report: after a 60 s outage, closing it dropped 46,656
samples that were still waiting. Real `grace serve`, stopped and started again on the same
port and data directory, a real client and reporter.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from grace_client import CoresetClient
from grace_proto.models import CreateJobRequest
from grace_selection.local_service import free_loopback_port
from tests.integration.service_process import start_service

JOB, N = "outage", 20_000


def applied_score_batches(client: CoresetClient) -> float:
    text = client.metrics()
    found = re.search(r'grace_ingest_batches_total\{kind="scores",outcome="applied"\} (\S+)', text)
    return 0.0 if found is None else float(found.group(1))


def test_a_backlog_after_an_outage_is_delivered_in_a_few_requests(tmp_path: Path) -> None:
    port, data = free_loopback_port(), tmp_path / "data"
    with (
        start_service(data, "", port=port) as service,
        CoresetClient(service.url, retries=0) as setup,
    ):
        setup.create_job(CreateJobRequest(job_id=JOB, n_samples=N, dim=4))
    # The service is down; training goes on and reports 2,000 steps of 32 losses.
    client = CoresetClient(f"http://127.0.0.1:{port}", retries=0, timeout=5)
    reporter = client.reporter(JOB, retry_interval=0.05)
    rng = np.random.default_rng(0)
    last: dict[int, float] = {}
    for step in range(2000):
        ids = rng.choice(N, size=32, replace=False)
        losses = rng.random(32).astype(np.float32)
        reporter.report(ids, losses, step=step)
        last.update(zip(ids.tolist(), losses.tolist(), strict=True))
    time.sleep(0.3)
    assert reporter.stats.pending_samples >= 1999 * 32
    with start_service(data, "", port=port):
        started = time.monotonic()
        stats = reporter.close(timeout=30)
        drained = time.monotonic() - started
        assert stats.dropped_samples == 0, stats
        assert stats.pending_samples == 0
        assert stats.failed_batches == 0
        # 64,000 samples in chunks of 65,536: the retried head, then one or two merged batches.
        assert applied_score_batches(client) <= 4
        job = client.get_job(JOB)
        assert job.scored_count == len(last)
        for sample in rng.choice(sorted(last), size=20, replace=False).tolist():
            assert client.get_sample(JOB, sample).loss == np.float32(last[sample])
    client.close()
    assert drained < 20

"""ScoreReporter: non-blocking, bounded, idempotent, flushed on close.

The reporter is driven through a stand-in for CoresetClient that behaves like the service
where it matters here: it applies a batch id once, can be "down" (ServiceUnavailable) or
refuse a batch (4xx). Real HTTP is covered in tests/integration/test_client_http.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from grace_client import ConflictError, GraceAPIError, GraceError, ScoreReporter, ServiceUnavailable
from grace_proto.models import IngestResponse


class StandInClient:
    """Records applied batches by id, like the service's idempotent ingest."""

    base_url = "http://stand-in"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.online = threading.Event()
        self.online.set()
        self.refuse: set[str] = set()
        self.applied: dict[str, dict[str, Any]] = {}
        self.attempts = 0
        self.lock = threading.Lock()

    def post_scores(self, job: str, ids: npt.ArrayLike, **kw: Any) -> IngestResponse:
        return self._apply("scores", ids, kw)

    def post_embeddings(
        self, job: str, ids: npt.ArrayLike, embeddings: npt.ArrayLike, **kw: Any
    ) -> IngestResponse:
        return self._apply("embeddings", ids, {**kw, "embeddings": np.asarray(embeddings)})

    def _apply(self, kind: str, ids: npt.ArrayLike, kw: dict[str, Any]) -> IngestResponse:
        with self.lock:
            self.attempts += 1
        time.sleep(self.delay)
        if not self.online.is_set():
            raise ServiceUnavailable("stand-in is down", attempts=1)
        batch_id = kw["batch_id"]
        if batch_id in self.refuse:
            raise GraceAPIError(422, "ids_out_of_range", "ids must be < 100", "arrays.ids")
        earlier = self.applied.get(batch_id, {}).get("loss")
        if earlier is not None and not np.array_equal(earlier, np.asarray(kw.get("loss"))):
            raise ConflictError(409, "batch_id_reused", "same id, other content", "meta.batch_id")
        with self.lock:
            duplicate = batch_id in self.applied
            if not duplicate:
                self.applied[batch_id] = {"kind": kind, "ids": np.asarray(ids).tolist(), **kw}
        return IngestResponse(
            batch_id=batch_id,
            accepted=0 if duplicate else len(np.asarray(ids)),
            duplicate=duplicate,
        )

    def samples(self, kind: str = "scores") -> list[int]:
        with self.lock:
            return sorted(i for b in self.applied.values() if b["kind"] == kind for i in b["ids"])


def reporter(client: StandInClient, **options: Any) -> ScoreReporter:
    options.setdefault("retry_interval", 0.02)
    return ScoreReporter(client, "job", **options)  # type: ignore[arg-type]


def test_report_returns_at_once_even_when_sending_is_slow() -> None:
    client = StandInClient(delay=0.05)
    rep = reporter(client)
    started = time.perf_counter()
    for step in range(20):
        rep.report(np.arange(step * 8, step * 8 + 8), np.ones(8), step=step)
    per_call = (time.perf_counter() - started) / 20
    assert per_call < 0.01  # a send takes 0.05 s; report only queues
    stats = rep.close(timeout=30)
    assert client.samples() == list(range(160))
    assert stats.sent_samples == 160
    assert stats.pending_samples == 0
    assert stats.dropped_samples == 0


def test_batch_ids_are_deterministic_so_a_replay_counts_once() -> None:
    client = StandInClient()
    first = reporter(client, run="exp1", rank=2, round=3)
    for step in (10, 11, 11):  # two reports in step 11 (e.g. gradient accumulation)
        first.report([step, step + 100], [0.1, 0.2], step=step)
    first.close()
    assert sorted(client.applied) == [
        "trainer.exp1.k2.r3.s10.n0.c0",
        "trainer.exp1.k2.r3.s11.n0.c0",
        "trainer.exp1.k2.r3.s11.n1.c0",
    ]
    # The run restarts from a checkpoint before step 11 and replays it: nothing counts twice.
    replay = reporter(client, run="exp1", rank=2, round=3)
    for step in (11, 11):
        replay.report([step, step + 100], [0.1, 0.2], step=step)
    stats = replay.close()
    assert stats.duplicate_batches == 2
    assert stats.sent_samples == 0
    assert len(client.applied) == 3


def test_an_outage_is_ridden_out_without_losing_reports() -> None:
    client = StandInClient()
    client.online.clear()
    rep = reporter(client)
    for step in range(10):
        rep.report([step], [float(step)], step=step)
    time.sleep(0.1)
    assert rep.stats.pending_samples >= 9
    assert client.samples() == []
    client.online.set()
    assert rep.flush(timeout=10)
    assert client.samples() == list(range(10))
    assert rep.close().dropped_samples == 0


def test_memory_is_bounded_by_dropping_the_oldest_reports() -> None:
    client = StandInClient()
    client.online.clear()
    one_report = 4 * (8 + 4)  # 4 ids (int64) and 4 losses (float32)
    rep = reporter(client, max_pending_bytes=5 * one_report)
    for step in range(50):
        rep.report(np.arange(4) + 4 * step, np.ones(4), step=step)
        assert rep.stats.pending_bytes <= 5 * one_report
    dropped = rep.stats.dropped_samples
    assert dropped >= 4 * 44  # at most 5 waiting reports plus the one in flight survive
    client.online.set()
    stats = rep.close(timeout=10)
    delivered = client.samples()
    assert len(delivered) + stats.dropped_samples == 200
    assert delivered[-4:] == [196, 197, 198, 199]  # the newest survive


def test_block_policy_waits_then_drops_the_new_report() -> None:
    client = StandInClient()
    client.online.clear()
    rep = reporter(client, max_pending_bytes=12, overflow="block", block_timeout=0.2)
    rep.report([1], [1.0], step=0)
    time.sleep(0.05)  # the first report is taken up by the sender (and fails, and comes back)
    rep.report([2], [1.0], step=1)
    started = time.perf_counter()
    rep.report([3], [1.0], step=2)  # no room: waits block_timeout, then gives up on it
    assert time.perf_counter() - started >= 0.15
    assert rep.stats.dropped_samples >= 1
    client.online.set()
    rep.close(timeout=10)
    assert 3 not in client.samples()


def test_non_finite_losses_are_left_out_and_counted() -> None:
    client = StandInClient()
    rep = reporter(client)
    rep.report([1, 2, 3, 4], [0.5, float("nan"), float("inf"), 1.5], step=0)
    stats = rep.close()
    assert client.samples() == [1, 4]
    assert stats.nonfinite_samples == 2


def test_a_refused_batch_is_logged_counted_and_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = StandInClient()
    client.refuse.add("trainer.default.k0.r0.s0.n0.c0")
    rep = reporter(client)
    rep.report([500], [1.0], step=0)
    rep.report([5], [1.0], step=1)
    stats = rep.close()
    assert stats.failed_batches == 1
    assert client.samples() == [5]
    assert client.attempts == 2
    assert "ids must be < 100" in caplog.text


def test_large_reports_are_chunked_and_embeddings_posted_alongside() -> None:
    client = StandInClient()
    rep = reporter(client, chunk_size=4)
    rep.report(np.arange(10), np.ones(10), embeddings=np.eye(10, 3), step=7, round=2)
    rep.close()
    assert sorted(client.applied) == sorted(
        [f"trainer.default.k0.r2.s7.n0.c{c}" for c in range(3)]
        + [f"trainer.default.k0.r2.s7.n0.c{c}.e" for c in range(3)]
    )
    assert client.samples("embeddings") == list(range(10))
    assert client.applied["trainer.default.k0.r2.s7.n0.c2"]["round"] == 2


def test_torch_tensors_with_grad_are_accepted() -> None:
    client = StandInClient()
    rep = reporter(client, round=lambda: 5)
    losses = torch.tensor([0.25, 0.75], requires_grad=True) * 2
    rep.report(torch.tensor([8, 9]), losses.to(torch.bfloat16), step=1)
    rep.close()
    sent = client.applied["trainer.default.k0.r5.s1.n0.c0"]
    assert sent["loss"].tolist() == [0.5, 1.5]
    assert sent["source"] == "trainer"


def test_close_with_the_service_down_returns_in_time_and_counts_the_loss() -> None:
    client = StandInClient()
    client.online.clear()
    rep = reporter(client)
    rep.report([1, 2, 3], [1.0, 1.0, 1.0], step=0)
    started = time.perf_counter()
    stats = rep.close(timeout=0.3)
    assert time.perf_counter() - started < 3
    assert stats.dropped_samples == 3
    with pytest.raises(GraceError, match="closed"):
        rep.report([4], [1.0], step=1)


def test_bad_reports_are_refused_at_the_call_naming_the_argument() -> None:
    rep = reporter(StandInClient())
    with pytest.raises(ValueError, match="losses: has 2 values for 3 indices"):
        rep.report([1, 2, 3], [1.0, 2.0], step=0)
    with pytest.raises(ValueError, match="losses: expected one value per sample"):
        rep.report([1, 2], np.ones((2, 5)), step=0)
    with pytest.raises(ValueError, match="embeddings"):
        rep.report([1, 2], None, embeddings=np.ones(2), step=0)
    with pytest.raises(ValueError, match="losses, importance, embeddings"):
        rep.report([1, 2], None, step=0)
    with pytest.raises(ValueError, match="run"):
        reporter(StandInClient(), run="has space")
    rep.close()


def test_a_sample_named_twice_in_one_report_is_sent_once_with_its_last_loss() -> None:
    client = StandInClient()
    rep = reporter(client)
    rep.report([4, 2, 4, 9], [1.0, 2.0, 3.0, 4.0], step=0)
    rep.close()
    sent = client.applied["trainer.default.k0.r0.s0.n0.c0"]
    assert sorted(zip(sent["ids"], sent["loss"].tolist(), strict=True)) == [
        (2, 2.0),
        (4, 3.0),
        (9, 4.0),
    ]


def test_a_replayed_step_with_other_losses_counts_as_a_duplicate_not_a_failure() -> None:
    client = StandInClient()
    first = reporter(client)
    first.report([1, 2], [0.5, 0.5], step=3)
    first.close()
    replay = reporter(client)
    replay.report([1, 2], [0.5001, 0.4999], step=3)  # nondeterministic kernels after a resume
    stats = replay.close()
    assert stats.failed_batches == 0
    assert stats.duplicate_batches == 1
    assert client.applied["trainer.default.k0.r0.s3.n0.c0"]["loss"].tolist() == [0.5, 0.5]


def test_the_backlog_of_an_outage_drains_in_full_size_batches() -> None:
    """A minute of small reports is a request or two once the service is back, not one per
    report (issue 14: closing after an outage used to drop tens of thousands of samples)."""
    client = StandInClient(delay=0.01)  # each request costs something, as over HTTP
    client.online.clear()
    rep = reporter(client, chunk_size=4096)
    rng = np.random.default_rng(0)
    last: dict[int, float] = {}
    for step in range(500):
        ids = rng.choice(3000, size=32, replace=False)
        losses = rng.random(32).astype(np.float32)
        rep.report(ids, losses, step=step)
        last.update(zip(ids.tolist(), losses.tolist(), strict=True))
    client.online.set()
    stats = rep.close(timeout=20)
    assert stats.dropped_samples == 0
    assert stats.pending_samples == 0
    assert len(client.applied) <= 1 + int(np.ceil(500 * 32 / 4096))  # not 500
    # Each sample ends with the loss it was reported with last, as one-by-one sending leaves it.
    final: dict[int, float] = {}
    for batch in client.applied.values():  # dicts keep the order batches were applied in
        final.update(zip(batch["ids"], np.asarray(batch["loss"]).tolist(), strict=True))
    assert final == pytest.approx(last)
    merged = [b for b in client.applied if ".m" in b]
    assert merged
    assert all(len(b) <= 128 for b in client.applied)  # the service's batch id limit


def test_merged_batches_keep_each_sample_once_with_its_last_values() -> None:
    from grace_client.batches import ReportBatch, can_merge, merge_batches

    def batch(ids: list[int], loss: list[float], step: int, round_: int = 1) -> ReportBatch:
        return ReportBatch(
            f"b{step}", np.array(ids), np.array(loss, np.float32), None, None, round_, step
        )

    parts = [batch([1, 2], [0.1, 0.2], 3), batch([2, 3], [0.5, 0.6], 4)]
    merged = merge_batches(parts, prefix="p")
    assert merged.loss is not None
    assert dict(zip(merged.ids.tolist(), merged.loss.tolist(), strict=True)) == pytest.approx(
        {1: 0.1, 2: 0.5, 3: 0.6}
    )
    assert merged.step == 4
    assert merged.batch_id == merge_batches(list(parts), prefix="p").batch_id  # deterministic
    assert not can_merge(parts[0], batch([4], [1.0], 5, round_=2))  # another round


class LateStartClient(StandInClient):
    """Its first request waits until the test lets it go: the sender's thread is not scheduled
    until every report is queued and the service is answering again (a loaded machine)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def _apply(self, kind: str, ids: npt.ArrayLike, kw: dict[str, Any]) -> IngestResponse:
        self.go.wait(timeout=20)
        return super()._apply(kind, ids, kw)


def test_a_backlog_the_sender_never_saw_fail_still_drains_merged_to_its_end() -> None:
    client = LateStartClient()
    rep = reporter(client, chunk_size=4096)
    rng = np.random.default_rng(1)
    for step in range(500):
        rep.report(rng.choice(3000, size=32, replace=False), np.ones(32), step=step)
    client.go.set()
    stats = rep.close(timeout=20)
    assert stats.pending_samples == 0
    # The first request held one report; the other 499 drain in chunks, not one by one.
    assert len(client.applied) <= 2 + int(np.ceil(499 * 32 / 4096))

"""ScoreReporter: hands the service the per-sample losses a training loop computes anyway.

`report(...)` only copies the arrays and appends them to a queue (microseconds); a
background thread sends them as binary batches. Guarantees:

- Never slows a step: the training thread does no I/O. A service outage is retried in the
  background; the step goes on.
- Bounded memory: at most `max_pending_bytes` of reports wait. When full, the policy
  decides: "drop_oldest" (default) discards the oldest waiting reports, so that training
  never waits; "block" makes `report` wait up to `block_timeout` seconds for room and then
  drops the new report (a batch that failed to send goes back to the queue even if that
  exceeds the bound by that one batch). Every dropped sample is counted in
  `stats.dropped_samples` and logged.
- No double counting: each report gets a deterministic batch id from (run, rank, round,
  step, its sequence number within that step, chunk), so a retried request, or a step
  replayed after resuming from a checkpoint, is recognised by the service as a duplicate.
  Start a new training run on the same job with a new `run` name.
- Flushed on close: `close()` waits (up to `flush_timeout`) until everything is sent.
- A backlog drains in full-size requests: after an outage, the reports that waited are merged
  (same round, same arrays, each sample once with its last values) into batches of up to
  `chunk_size` samples, so that a minute of small reports is a request or two, not thousands.
  A merged batch's id is derived from the ids it merges (`...m<digest>`), so its retries are
  still duplicates; a replay that does not merge the same way re-applies the same values.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from grace_client.batches import (
    ReportBatch,
    can_merge,
    clean_report,
    merge_batches,
    split_report,
)
from grace_client.errors import ConflictError, GraceAPIError, GraceError, ServiceUnavailable

if TYPE_CHECKING:
    from grace_client.client import CoresetClient

log = logging.getLogger("grace_client")

Overflow = Literal["drop_oldest", "block"]
_RUN_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_REMEMBERED_STEPS = 4096


@dataclass(frozen=True, slots=True)
class ReporterStats:
    pending_samples: int
    pending_bytes: int
    sent_batches: int
    sent_samples: int
    duplicate_batches: int
    dropped_samples: int
    nonfinite_samples: int
    failed_batches: int


class ScoreReporter:
    """Background, bounded, idempotent reporting of training-time scores for one job.

    client: the CoresetClient to send with. rank: this process's rank (part of batch ids).
    run: a name for this training run (part of batch ids). round: the round the reported
    samples were drawn from, or a callable returning it (e.g. `lambda: sampler.round`).
    chunk_size: most samples per request.
    """

    def __init__(
        self,
        client: CoresetClient,
        job: str,
        *,
        rank: int = 0,
        run: str = "default",
        round: int | Callable[[], int] = 0,
        max_pending_bytes: int = 64 * 1024 * 1024,
        overflow: Overflow = "drop_oldest",
        block_timeout: float = 1.0,
        chunk_size: int = 65536,
        retry_interval: float = 1.0,
        flush_timeout: float = 30.0,
    ) -> None:
        if not _RUN_NAME.match(run):
            raise ValueError(f"run: use 1-40 letters, digits, '_' or '-', got {run!r}")
        if overflow not in ("drop_oldest", "block"):
            raise ValueError(f"overflow: must be 'drop_oldest' or 'block', got {overflow!r}")
        if max_pending_bytes <= 0 or chunk_size <= 0:
            raise ValueError("max_pending_bytes and chunk_size must be > 0")
        self.client = client
        self.job = job
        self.rank = rank
        self.run = run
        self._round = round
        self.max_pending_bytes = max_pending_bytes
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.chunk_size = chunk_size
        self.retry_interval = retry_interval
        self.flush_timeout = flush_timeout
        self._cond = threading.Condition()
        self._queue: deque[ReportBatch] = deque()
        self._pending_bytes = 0
        self._inflight: ReportBatch | None = None
        self._draining = False  # the service is back after an outage: merge the backlog
        self._closing = False
        self._thread: threading.Thread | None = None
        self._seq: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._counts = {
            "sent_batches": 0,
            "sent_samples": 0,
            "duplicate_batches": 0,
            "dropped_samples": 0,
            "nonfinite_samples": 0,
            "failed_batches": 0,
        }

    # -- the training thread's side ----------------------------------------------------

    def report(
        self,
        indices: Any,
        losses: Any = None,
        importance: Any = None,
        embeddings: Any = None,
        *,
        step: int,
        round: int | None = None,
    ) -> None:
        """Queue per-sample scores of `indices` (numpy arrays, lists or torch tensors).

        Samples whose loss or importance is NaN/Inf are left out (and counted), so that one
        overflowing sample cannot get the whole batch refused.
        """
        if self._closing:
            raise GraceError("report() after close(): this ScoreReporter is closed")
        clean = clean_report(indices, losses, importance, embeddings)
        round_ = self._current_round() if round is None else round
        seq = self._next_seq(step, round_)
        prefix = f"trainer.{self.run}.k{self.rank}.r{round_}.s{step}.n{seq}"
        batches = split_report(
            clean, prefix=prefix, chunk_size=self.chunk_size, round_=round_, step=step
        )
        with self._cond:
            self._counts["nonfinite_samples"] += clean.nonfinite
            self._start_locked()
            for batch in batches:
                self._enqueue(batch)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued report is sent (or refused); False if `timeout` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight is not None:
                if self._thread is None:
                    self._start_locked()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float | None = None) -> ReporterStats:
        """Flush (up to `timeout`, default `flush_timeout`), stop the thread, return the stats.

        Reports still unsent at the deadline are dropped, counted and logged.
        """
        drained = self.flush(self.flush_timeout if timeout is None else timeout)
        with self._cond:
            self._closing = True
            if not drained:
                lost = sum(b.ids.shape[0] for b in self._queue)
                self._counts["dropped_samples"] += lost
                self._queue.clear()
                self._pending_bytes = 0
                log.warning(
                    "ScoreReporter closed with %d unsent samples for job %r (service at %s "
                    "unreachable or too slow); they are dropped",
                    lost,
                    self.job,
                    self.client.base_url,
                )
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=1.0)
        return self.stats

    @property
    def stats(self) -> ReporterStats:
        with self._cond:
            pending = sum(b.ids.shape[0] for b in self._queue)
            return ReporterStats(
                pending_samples=pending, pending_bytes=self._pending_bytes, **self._counts
            )

    def __enter__(self) -> ScoreReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queueing ----------------------------------------------------------------------

    def _current_round(self) -> int:
        return int(self._round()) if callable(self._round) else int(self._round)

    def _next_seq(self, step: int, round_: int) -> int:
        # Deterministic per (round, step): the k-th report of a step gets k, in this run and
        # in a replay of it after a restart.
        with self._cond:
            key = (round_, step)
            seq = self._seq.get(key, 0)
            self._seq[key] = seq + 1
            self._seq.move_to_end(key)
            while len(self._seq) > _REMEMBERED_STEPS:
                self._seq.popitem(last=False)
            return seq

    def _enqueue(self, batch: ReportBatch) -> None:
        """Append under the lock, making room by the overflow policy."""
        size = batch.nbytes
        if self.overflow == "block":
            deadline = time.monotonic() + self.block_timeout
            while self._queue and self._pending_bytes + size > self.max_pending_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._drop(batch.ids.shape[0], "the queue stayed full for block_timeout")
                    return
                self._cond.wait(remaining)
        else:
            while self._queue and self._pending_bytes + size > self.max_pending_bytes:
                oldest = self._queue.popleft()
                self._pending_bytes -= oldest.nbytes
                self._drop(oldest.ids.shape[0], "the queue is full (drop_oldest)")
        self._queue.append(batch)
        self._pending_bytes += size

    def _drop(self, samples: int, why: str) -> None:
        first = self._counts["dropped_samples"] == 0
        self._counts["dropped_samples"] += samples
        # Loud once, then quiet: a long outage must not flood the training log.
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "ScoreReporter dropped %d samples for job %r: %s", samples, self.job, why)

    # -- the background thread ---------------------------------------------------------

    def _start_locked(self) -> None:
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(
                target=self._run, name=f"grace-reporter-{self.job}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        outage_logged = False
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._take_locked()
                self._inflight = batch
                self._cond.notify_all()  # room for a report() blocked on a full queue
            retry = recovered = False
            try:
                self._send(batch)
                if outage_logged:
                    log.warning("GRACE service reachable again; reporting resumes")
                    outage_logged = False
                    recovered = True
            except ServiceUnavailable as exc:
                retry = True
                if not outage_logged:
                    log.warning("reporting paused, will retry: %s", exc)
                    outage_logged = True
            except ConflictError as exc:
                # batch_id_reused: a replayed step (after a resume) computed slightly different
                # losses; the first report of that step stands, which is what we want.
                log.debug("report batch %s already applied: %s", batch.batch_id, exc)
                with self._cond:
                    self._counts["duplicate_batches"] += 1
            except GraceAPIError as exc:
                log.error("the service refused report batch %s: %s", batch.batch_id, exc)
                with self._cond:
                    self._counts["failed_batches"] += 1
            except Exception:
                log.exception("report batch %s failed unexpectedly", batch.batch_id)
                with self._cond:
                    self._counts["failed_batches"] += 1
            with self._cond:
                self._inflight = None
                # The backlog of an outage drains merged, once the service answers again.
                self._draining = (self._draining or recovered) and not retry and bool(self._queue)
                if retry and self._closing:
                    self._drop(batch.ids.shape[0], "the service was unreachable at close()")
                elif (
                    retry
                    and self.overflow == "drop_oldest"
                    and self._pending_bytes + batch.nbytes > self.max_pending_bytes
                ):
                    # Newer reports filled the queue meanwhile; this one is the oldest. (With
                    # "block" it goes back anyway: the queue may exceed the bound by this one
                    # batch, and report() waits for room instead.)
                    self._drop(batch.ids.shape[0], "the queue is full (drop_oldest)")
                elif retry:
                    # Back at the head: it is the oldest, so drop_oldest discards it first.
                    self._queue.appendleft(batch)
                    self._pending_bytes += batch.nbytes
                    self._cond.notify_all()
                    self._cond.wait(self.retry_interval)
                self._cond.notify_all()

    def _take_locked(self) -> ReportBatch:
        """The next batch to send: the head of the queue, merged with the mergeable batches
        behind it up to `chunk_size` samples while a backlog drains: after an outage, or
        whenever a full chunk waits (the sender fell behind, or an outage ended before this
        thread ever saw it fail)."""
        # A backlog, once found, drains merged to its end (the flag holds while sends succeed
        # and reports wait): its tail would otherwise go out one small request each.
        self._draining = self._draining or self._backlog_locked()
        parts = [self._queue.popleft()]
        size = parts[0].size
        while (
            self._draining
            and self._queue
            and can_merge(parts[0], self._queue[0])
            and size + self._queue[0].size <= self.chunk_size
        ):
            parts.append(self._queue.popleft())
            size += parts[-1].size
        self._pending_bytes -= sum(p.nbytes for p in parts)
        prefix = f"trainer.{self.run}.k{self.rank}.r{parts[0].round}"
        return merge_batches(parts, prefix=prefix)

    def _backlog_locked(self) -> bool:
        """Whether at least `chunk_size` samples wait; the scan stops there, so it is short."""
        waiting = 0
        for queued in self._queue:
            waiting += queued.size
            if waiting >= self.chunk_size:
                return True
        return False

    def _send(self, batch: ReportBatch) -> None:
        accepted = 0
        duplicate = False
        if batch.loss is not None or batch.importance is not None:
            answer = self.client.post_scores(
                self.job,
                batch.ids,
                loss=batch.loss,
                importance=batch.importance,
                source="trainer",
                round=batch.round,
                step=batch.step,
                batch_id=batch.batch_id,
            )
            accepted, duplicate = answer.accepted, answer.duplicate
        if batch.embeddings is not None:
            answer = self.client.post_embeddings(
                self.job,
                batch.ids,
                batch.embeddings,
                batch_id=f"{batch.batch_id}.e",
                round=batch.round,
            )
            accepted, duplicate = max(accepted, answer.accepted), duplicate or answer.duplicate
        with self._cond:
            self._counts["sent_batches"] += 1
            self._counts["sent_samples"] += accepted
            self._counts["duplicate_batches"] += int(duplicate)

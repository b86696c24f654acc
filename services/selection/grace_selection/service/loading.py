"""Reading a job back from the store at start-up, and what is kept of a job that fails to.

A job that cannot be loaded (a spec this version cannot read, a journal entry that no longer
applies, state that no longer fits in memory) must not keep the other jobs from serving, nor
hide itself: it is kept as a `FailedJob`, listed on /readyz and GET /v1/jobs, refused with 409
`job_failed_to_load` by every route of the job, and deleted by DELETE /v1/jobs/{job}.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from grace_selection.adapters.ports import ScoreStore
from grace_selection.adapters.store_records import StoreError
from grace_selection.service.batches import parse_batch
from grace_selection.service.errors import JobFailedError, NotReadyError
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.jobs import CHECKPOINT_DOCUMENT, Job
from grace_selection.service.sharded_keeper import JobKeeper
from grace_selection.service.specs import JobSpec

log = logging.getLogger("grace_selection.service")


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A stored job that did not load: its id and why."""

    job_id: str
    error: str

    def refusal(self) -> JobFailedError:
        return JobFailedError(
            f"job {self.job_id!r} is stored but failed to load when the service started "
            f"({self.error}); it serves nothing. DELETE /v1/jobs/{self.job_id} removes it and "
            "its stored data, or fix the cause and restart the service",
            field="job_id",
            extra={"load_error": self.error},
        )


def load_job(store: ScoreStore, spec: JobSpec, keeper: JobKeeper) -> Job:
    """A job as the store holds it: snapshot, then the log after it, manifests, checkpoint and
    the index snapshot."""
    job = Job(spec, keeper)
    snapshot = store.read_snapshot(spec.job_id)
    if snapshot is not None:
        job.arrays.load_snapshot(snapshot.seq, dict(snapshot.arrays))
    replayed = 0
    for entry in store.read_log(spec.job_id, after_seq=job.arrays.applied_seq):
        job.arrays.apply(parse_batch(entry.kind, entry.payload, spec.n, spec.dim), entry.seq)
        replayed += 1
    job.rounds.restore(store.read_manifests(spec.job_id))
    job.checkpoint_from(store.get_document(spec.job_id, CHECKPOINT_DOCUMENT))
    keeper = job.keeper
    if isinstance(keeper, GraphKeeper):  # the graph's vectors become the job's matrix
        loaded_index = keeper.load(job.arrays.adopt_graph)
    else:
        loaded_index = keeper.load()
    log.info(
        "loaded job %s: %d log entries replayed, %d rounds, index %s",
        spec.job_id,
        replayed,
        len(job.rounds),
        "loaded" if loaded_index else "to be built at the next round",
    )
    return job


def describe_failure(exc: BaseException) -> str:
    """One line for /readyz and the job list (the traceback is in the log)."""
    text = " ".join(str(exc).split())  # pydantic's messages span lines
    return f"{type(exc).__name__}: {text}"[:500]


class StartupLoad:
    """Whether the service has read its jobs back yet, which failed, and what it waits for.

    `run` calls the loader until it gets past the store: while the store is unreachable (Redis
    often starts after the service) it retries with a capped backoff, and `state` says why.
    """

    def __init__(self) -> None:
        self.loaded = threading.Event()
        self.closing = threading.Event()
        self.failed: dict[str, FailedJob] = {}
        self._waiting_for_store: str | None = None

    def run(self, load_all: Callable[[], dict[str, FailedJob]]) -> None:
        """Call `load_all` (which returns the jobs that failed) until the store lets it finish,
        or until `close`; either way, the service counts as loaded afterwards."""
        delay = 0.5
        try:
            while not self.closing.is_set():
                try:
                    self.failed = load_all()
                    return
                except StoreError as exc:
                    self._waiting_for_store = str(exc)
                    log.warning("the store is unreachable, retrying in %.1f s: %s", delay, exc)
                    self.closing.wait(delay)
                    delay = min(2 * delay, 10.0)
        finally:
            self._waiting_for_store = None
            self.loaded.set()

    def close(self, timeout: float = 30) -> None:
        self.closing.set()  # a loader still waiting for the store gives up
        self.loaded.wait(timeout)

    def state(self, store: str) -> str:
        """/readyz's `state` check, given its `store` check ("ok" or why not)."""
        loaded = self.loaded.is_set()  # read once: the loader may finish meanwhile
        waiting = self._waiting_for_store
        if waiting is None and not loaded and store != "ok":
            waiting = store  # the loader's first try has not failed yet, but it will
        if waiting is not None:
            return f"loading: waiting for the store ({waiting})"
        return "ok" if loaded else "loading"

    def require_loaded(self) -> None:
        if not self.loaded.is_set():
            raise NotReadyError("the service is still loading its state; retry in a moment")

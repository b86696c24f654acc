"""Reading a job back from the store at start-up, and what is kept of a job that fails to.

A job that cannot be loaded (a spec this version cannot read, a journal entry that no longer
applies, state that no longer fits in memory) must not keep the other jobs from serving, nor
hide itself: it is kept as a `FailedJob`, listed on /readyz and GET /v1/jobs, refused with 409
`job_failed_to_load` by every route of the job, and deleted by DELETE /v1/jobs/{job}.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from grace_selection.adapters.ports import ScoreStore
from grace_selection.service.batches import parse_batch
from grace_selection.service.errors import JobFailedError
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
    loaded_index = job.keeper.load()
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

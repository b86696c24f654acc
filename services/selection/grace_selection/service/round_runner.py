"""Computing and publishing one round, off the event loop.

1. `round_step.step_round`: under the job lock, copy what the round needs (scores, and
   embeddings newer than the graph); ingest goes on while the graph is updated (build-then-swap
   inside GraphKeeper) and core.compute_round runs.
2. Under the job lock, publish through the round lifecycle: manifest and arrays in one store
   transaction, then the swap into memory. Readers see the previous round until that swap.
4. After publishing (`after_publish`): snapshot the index, and compact the log once it has
   grown large.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_proto.models import RoundManifest, RoundStatus, RoundTimings
from grace_selection.adapters.ports import ScoreStore
from grace_selection.adapters.store_records import StateSnapshot
from grace_selection.core.coreset import sha256_of_indices
from grace_selection.service.jobs import Job
from grace_selection.service.lifecycle import get_utc_now
from grace_selection.service.resources import release_free_memory
from grace_selection.service.round_step import step_round
from grace_selection.service.rounds import measure_churn

log = logging.getLogger("grace_selection.rounds")
COMPACT_MIN_BYTES = 64 * 1024 * 1024


def run_round(job: Job, store: ScoreStore, pending: RoundManifest) -> RoundManifest | None:
    """Compute and publish the round `pending` announces; None if the job was deleted."""
    start = time.perf_counter()
    r, config = pending.round, job.spec.config
    previous_importance = job.rounds.latest_importance(store, job.spec.n)
    outcome = step_round(
        job.arrays,
        job.keeper,
        config,
        previous_importance,
        round_=r,
        seed=pending.seed,
        lock=job.lock,
    )
    result, inputs = outcome.result, outcome.inputs
    update = outcome.update
    coreset = result.coreset
    previous = job.rounds.data(r - 1, store).indices if r > 0 else None
    manifest = pending.model_copy(
        update={
            "status": RoundStatus.PUBLISHED,
            "count": coreset.size,
            "indices_sha256": sha256_of_indices(coreset.indices),
            "digest": coreset.digest,
            "published_at": get_utc_now(),
            "weighted": coreset.weights is not None,
            "rescore_count": int(result.rescore_plan.size),
            "rescored_fraction": float(np.count_nonzero(inputs.fresh)) / max(job.spec.n, 1),
            "estimated_fraction": float(np.count_nonzero(result.estimated)) / max(job.spec.n, 1),
            "churn": measure_churn(previous, coreset.indices),
            # The published graph's: a refresh's sampled recall; none after a (re)build, which
            # is as good as the index makes it (the keeper logs what triggered a rebuild).
            "graph_recall": None if update is None or update.rebuilt else update.recall,
            "timings": RoundTimings(
                graph_seconds=outcome.graph_seconds,
                # compute_round estimates, selects and plans in one call: its time is here.
                select_seconds=outcome.select_seconds,
                total_seconds=time.perf_counter() - start,
            ),
        }
    )
    arrays: dict[str, npt.NDArray[Any]] = {
        "indices": coreset.indices,
        "rescore": result.rescore_plan,
        "importance": result.importance,
        "estimated": result.estimated.astype(np.uint8),
        "loss": inputs.scores.loss,
    }
    if coreset.weights is not None:
        arrays["weights"] = coreset.weights
    with job.lock:
        if job.deleted:
            return None
        job.rounds.publish(store, manifest, arrays)
    return manifest


def after_publish(job: Job, store: ScoreStore, r: int) -> None:
    """Housekeeping that must not fail a published round: it is only logged when it fails."""
    try:
        job.keeper.save(r)
    except Exception:
        log.exception("could not snapshot the index of job %s; it will be rebuilt", job.job_id)
    try:
        compact_if_due(job, store)
    except Exception:
        log.exception("could not compact the log of job %s; replay will take longer", job.job_id)
    release_free_memory()  # the round's working copies and a replaced index


def is_compaction_due(job: Job, factor: float = 1.0) -> bool:
    """The log has outgrown `factor` times the state (and 64 MiB): replay would cost more than
    reading a snapshot."""
    arrays_state = job.arrays
    return arrays_state.log_bytes >= factor * max(COMPACT_MIN_BYTES, arrays_state.state_bytes())


def compact_if_due(job: Job, store: ScoreStore, *, force: bool = False) -> bool:
    """Snapshot the state and drop the log it covers once the log outgrows the state."""
    arrays_state = job.arrays
    if not force and not is_compaction_due(job):
        return False
    with job.lock:
        if job.deleted:
            return False
        seq = arrays_state.applied_seq
        arrays = arrays_state.snapshot_arrays()
        arrays_state.log_bytes = 0
    if seq == 0:
        return False
    store.write_snapshot(job.job_id, StateSnapshot(seq, arrays))
    log.info("compacted job %s through log seq %d", job.job_id, seq)
    return True


def queue_compaction(job: Job, store: ScoreStore, executor: Executor) -> None:
    """Compact on `executor` (the round thread) once the log has outgrown twice the state;
    at most one compaction of a job is queued at a time."""
    if job.compaction_queued or not is_compaction_due(job, factor=2.0):
        return
    job.compaction_queued = True

    def compact() -> None:
        try:
            compact_if_due(job, store)
        except Exception:
            log.exception("could not compact the log of job %s", job.job_id)
        finally:
            job.compaction_queued = False

    executor.submit(compact)


def describe(manifest: RoundManifest) -> str:
    """The one log line per round."""
    t = manifest.timings
    churn = "-" if manifest.churn is None else f"{manifest.churn:.3f}"
    return (
        f"round published job={manifest.job_id} round={manifest.round} count={manifest.count} "
        f"rescore_next={manifest.rescore_count} fresh={manifest.rescored_fraction:.3f} "
        f"churn={churn} graph={t.graph_seconds:.3f}s select={t.select_seconds:.3f}s "
        f"total={t.total_seconds:.3f}s"
        + ("" if manifest.graph_recall is None else f" graph_recall={manifest.graph_recall:.3f}")
    )

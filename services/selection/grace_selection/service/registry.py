"""The service layer: every job of this process, and the operations the API exposes.

Routes call these methods and do nothing else. Methods that may block (store I/O, numpy on
large arrays) are plain functions the API runs in a worker thread; `cached_*` methods never
block and run on the event loop. Rounds are computed on one background thread, one at a time:
selection is CPU-bound and two at once would only slow each other down on small machines.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from grace_proto.models import (
    CheckpointInfo,
    CheckpointRequest,
    CreateJobRequest,
    FailedJobResponse,
    IngestResponse,
    JobListResponse,
    JobResponse,
    RoundDiffResponse,
    RoundManifest,
    RoundStatsResponse,
    SampleResponse,
    ScoreBatchRequest,
    TriggerRoundRequest,
)
from grace_selection.adapters.ports import ScoreStore, ShardedIndex
from grace_selection.adapters.store_records import StoreError
from grace_selection.service.batches import ScoreBatch, parse_batch, parse_score_json
from grace_selection.service.errors import (
    ConflictError,
    RoundComputingError,
    UnknownJobError,
    UnknownRoundError,
)
from grace_selection.service.events import NoEvents, ServiceEvents
from grace_selection.service.gauges import JobGauges, describe_gauges
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.inspection import describe_round, describe_sample, project
from grace_selection.service.jobs import Job
from grace_selection.service.keeper_types import IndexFactory
from grace_selection.service.loading import FailedJob, StartupLoad, describe_failure, load_job
from grace_selection.service.resources import lower_thread_priority
from grace_selection.service.round_changes import (
    TableExport,
    TableFormat,
    TableRows,
    describe_diff,
    export_round_table,
)
from grace_selection.service.round_runner import (
    after_publish,
    describe,
    queue_compaction,
    run_round,
)
from grace_selection.service.rounds import Body, encode_rescore
from grace_selection.service.sharded_keeper import JobKeeper, ShardedGraphKeeper
from grace_selection.service.sizing import check_job_size, default_job_limit
from grace_selection.service.specs import JobSpec

log = logging.getLogger("grace_selection.service")


class SelectionService:
    def __init__(
        self,
        store: ScoreStore,
        make_index_factory: IndexFactory,
        data_dir: Path,
        events: ServiceEvents | None = None,
        max_job_bytes: int | None = None,
        round_nice: int = 0,
        make_sharded_index: Callable[[int], ShardedIndex] | None = None,
    ) -> None:
        self.store = store
        # Set (GRACE_SHARDS > 0): every job's graph and selection run on shards.
        self.make_sharded_index = make_sharded_index
        self.max_job_bytes = default_job_limit() if max_job_bytes is None else max_job_bytes
        self.make_index_factory = make_index_factory
        self.data_dir = Path(data_dir)
        self.events: ServiceEvents = events or NoEvents()
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        # Reads must not wait for a round: its thread (and hnswlib's) yields the CPU to them.
        self._rounds = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="grace-round",
            initializer=lower_thread_priority,
            initargs=(round_nice,),
        )
        self._startup = StartupLoad()

    # -- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Read every job back from the store: snapshot + log replay, manifests, index.

        While the store is unreachable (Redis often starts after the service) this retries
        with a capped backoff; /readyz says "loading" until every job is back.
        """
        self._startup.run(self._load_all)

    def _load_all(self) -> dict[str, FailedJob]:
        jobs: dict[str, Job] = {}
        failed: dict[str, FailedJob] = {}
        for job_id, raw in self.store.read_jobs().items():
            try:
                spec = JobSpec.from_bytes(raw)
                jobs[job_id] = load_job(self.store, spec, self._keeper(spec))
            except StoreError as exc:
                self.store.ping()  # unreachable: raises, and the load starts over once it is back
                log.exception("job %s could not be loaded: its stored data is damaged", job_id)
                failed[job_id] = FailedJob(job_id, describe_failure(exc))
            except Exception as exc:
                log.exception("job %s could not be loaded", job_id)
                failed[job_id] = FailedJob(job_id, describe_failure(exc))
        with self._jobs_lock:
            self._jobs.update(jobs)
        return failed

    def close(self) -> None:
        self._startup.close()
        self._rounds.shutdown(wait=True, cancel_futures=True)
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        for job in jobs:  # shard actors end with the service, not with the Ray cluster
            if isinstance(job.keeper, ShardedGraphKeeper):
                job.keeper.close()
        self.store.close()

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, named checks). Ready once the state is loaded and the store answers; a job
        that failed to load is listed (`job:<id>`) but does not keep the others from serving."""
        try:
            self.store.ping()
            store = "ok"
        except StoreError as exc:
            store = f"unreachable: {exc}"
        state = self._startup.state(store)
        checks = {"state": state, "store": store}
        ready = all(value == "ok" for value in checks.values())
        for job_id, failed in sorted(self._startup.failed.items()):
            checks[f"job:{job_id}"] = f"failed to load: {failed.error}"
        return ready, checks

    def job_count(self) -> int:
        return len(self._jobs)

    def gauges(self) -> tuple[list[JobGauges], int]:
        """(the newest round's gauges of each job that has one, jobs that failed to load);
        no I/O, so /metrics can read it on the event loop."""
        with self._jobs_lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.job_id)
            failed = len(self._startup.failed)
        return [g for g in map(describe_gauges, jobs) if g is not None], failed

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._startup.loaded.wait(timeout)

    # -- jobs ------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        self._startup.require_loaded()
        job = self._jobs.get(job_id)
        if job is None:
            failed = self._startup.failed.get(job_id)
            if failed is not None:
                raise failed.refusal()
            raise UnknownJobError(
                f"no job {job_id!r}; create it with POST /v1/jobs or list jobs with GET /v1/jobs",
                field="job_id",
            )
        return job

    def create_job(self, request: CreateJobRequest) -> tuple[JobResponse, bool]:
        """(the job, True if it was created now); an identical re-create is a no-op."""
        self._startup.require_loaded()
        spec = JobSpec.new(request)
        with self._jobs_lock:
            existing = self._jobs.get(request.job_id)
            failed = self._startup.failed.get(request.job_id)
            if failed is not None:
                raise failed.refusal()
            if existing is None:
                check_job_size(request, self.max_job_bytes, self.make_index_factory.build_parts)
                if not self.store.create_job(request.job_id, spec.to_bytes()):
                    raise ConflictError(
                        f"job {request.job_id!r} exists in the store but not in this process",
                        field="job_id",
                    )
                self._jobs[request.job_id] = existing = Job(spec, self._keeper(spec))
                log.info("created job %s: n=%d dim=%d", spec.job_id, spec.n, spec.dim)
                return existing.response(), True
        if not existing.spec.same_request(request):
            raise ConflictError(
                f"job {request.job_id!r} exists with a different spec; delete it first or "
                "choose another job_id",
                field="job_id",
                code="job_exists",
            )
        return existing.response(), False

    def job_response(self, job_id: str) -> JobResponse:
        return self.job(job_id).response()

    def list_jobs(self) -> JobListResponse:
        self._startup.require_loaded()
        with self._jobs_lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.job_id)
            failed = [self._startup.failed[job_id] for job_id in sorted(self._startup.failed)]
        return JobListResponse(
            jobs=[job.response() for job in jobs],
            failed=[FailedJobResponse(job_id=f.job_id, error=f.error) for f in failed],
        )

    def delete_job(self, job_id: str) -> None:
        if job_id in self._startup.failed and self._startup.loaded.is_set():
            self._delete_failed(job_id)
            return
        job = self.job(job_id)
        with job.lock:
            job.deleted = True
            with self._jobs_lock:
                self._jobs.pop(job_id, None)
            self.store.delete_job(job_id)
        job.keeper.delete()
        log.info("deleted job %s", job_id)

    def _delete_failed(self, job_id: str) -> None:
        """Remove what is stored of a job that failed to load (only DELETE can)."""
        self.store.delete_job(job_id)
        shutil.rmtree(self.data_dir / "indexes" / job_id, ignore_errors=True)
        with self._jobs_lock:
            self._startup.failed.pop(job_id, None)
        log.info("deleted job %s, which had failed to load", job_id)

    # -- ingest ----------------------------------------------------------------------------

    def ingest(self, job_id: str, kind: str, body: bytes) -> IngestResponse:
        job = self.job(job_id)
        batch = parse_batch(kind, body, job.spec.n, job.spec.dim)
        answer = job.ingest(batch, self.store)
        source = batch.source if isinstance(batch, ScoreBatch) else None
        self.events.batch_ingested(kind, source, answer.accepted, len(body), answer.duplicate)
        if isinstance(batch, ScoreBatch) and not answer.duplicate:
            self._maybe_auto_round(job)
        self._maybe_compact(job)
        return answer

    def ingest_scores_json(self, job_id: str, request: ScoreBatchRequest) -> IngestResponse:
        job = self.job(job_id)
        batch = parse_score_json(request, job.spec.n)
        answer = job.ingest(batch, self.store)
        self.events.batch_ingested(
            "scores", batch.source, answer.accepted, len(batch.payload), answer.duplicate
        )
        if not answer.duplicate:
            self._maybe_auto_round(job)
        self._maybe_compact(job)
        return answer

    def _maybe_compact(self, job: Job) -> None:
        """Rounds compact the log after publishing; a job ingesting for long without rounds is
        compacted from here, on the round thread (so never while a round computes)."""
        queue_compaction(job, self.store, self._rounds)

    def _maybe_auto_round(self, job: Job) -> None:
        fraction = job.spec.request.auto_round_fraction
        if fraction is None or job.rounds.computing is not None:
            return
        if job.fresh_share_of_plan(self.store) >= fraction:
            try:
                manifest = self.trigger_round(job.job_id, None)
                log.info("auto policy started round %d of job %s", manifest.round, job.job_id)
            except ConflictError:
                pass

    # -- rounds ----------------------------------------------------------------------------

    def trigger_round(self, job_id: str, request: TriggerRoundRequest | None) -> RoundManifest:
        """Start computing the next round (or answer the one in progress)."""
        job = self.job(job_id)
        with job.lock:
            job.check_alive()
            if job.rounds.computing is not None:
                return job.rounds.computing
            job.check_has_inputs()
            seed = job.spec.request.seed
            if request is not None and request.seed is not None:
                seed = request.seed
            pending = job.rounds.begin(job.spec.request.config, seed)
        self._rounds.submit(self._run, job, pending)
        return pending

    def _run(self, job: Job, pending: RoundManifest) -> None:
        try:
            manifest = run_round(job, self.store, pending)
        except Exception as exc:
            log.exception("round %d of job %s failed", pending.round, job.job_id)
            with job.lock:
                failed = job.rounds.fail(f"{type(exc).__name__}: {exc}")
            self.events.round_failed(failed)
            return
        if manifest is not None:
            log.info(describe(manifest))
            self.events.round_published(manifest)
            after_publish(job, self.store, manifest.round)

    def manifest_json(self, job_id: str, r: str) -> bytes:
        """A round's manifest: the stored bytes once published (byte-identical forever)."""
        rounds = self.job(job_id).rounds
        return rounds.manifest_bytes(rounds.resolve(r))

    def list_rounds(self, job_id: str) -> list[RoundManifest]:
        return self.job(job_id).rounds.listing()

    def cached_indices(self, job_id: str, r: str, rank: int, world: int, fmt: str) -> Body | None:
        """The slice if its round is in memory (no I/O: safe on the event loop), else None."""
        rounds = self.job(job_id).rounds
        data = rounds.cached(rounds.resolve(r))
        return None if data is None else data.indices_body(rank, world, fmt)

    def indices(self, job_id: str, r: str, rank: int, world: int, fmt: str) -> Body:
        rounds = self.job(job_id).rounds
        return rounds.data(rounds.resolve(r), self.store).indices_body(rank, world, fmt)

    def rescore(self, job_id: str, r: str, shard: int, of: int, fmt: str) -> Body:
        """The ids to score *for* round r: round 0 is every sample; round r >= 1 is the plan
        published with round r - 1. `latest` means the next round to be computed."""
        job = self.job(job_id)
        round_ = job.rounds.next_round if r == "latest" else int(r)
        if round_ == 0:
            key = (shard, of, fmt)
            plan = np.arange(job.spec.n, dtype=np.int64)
            return job.warmup_body(
                key, lambda: encode_rescore(job_id, 0, plan, shard, of, fmt, job.checkpoint)
            )
        try:
            data = job.rounds.data(round_ - 1, self.store)
        except UnknownRoundError as exc:
            raise UnknownRoundError(
                f"no rescore plan for round {round_} yet: it is published with round "
                f"{round_ - 1}, which does not exist (newest round: {job.rounds.latest})",
                field="round",
            ) from exc
        except RoundComputingError:
            raise
        return encode_rescore(job_id, round_, data.rescore, shard, of, fmt, job.checkpoint)

    # -- inspection (the dashboard) --------------------------------------------------------

    def round_stats(self, job_id: str, r: str, bins: int) -> RoundStatsResponse:
        job = self.job(job_id)
        return describe_round(job, self.store, job.rounds.resolve(r), bins)

    def round_diff(self, job_id: str, r: str, limit: int) -> RoundDiffResponse:
        job = self.job(job_id)
        return describe_diff(job, self.store, job.rounds.resolve(r), limit)

    def round_table(self, job_id: str, r: str, rows: TableRows, fmt: TableFormat) -> TableExport:
        """A round's per-sample table as CSV or Parquet chunks (streamed by the route)."""
        job = self.job(job_id)
        return export_round_table(job, self.store, job.rounds.resolve(r), rows, fmt)

    def sample(self, job_id: str, sample_id: int) -> SampleResponse:
        return describe_sample(self.job(job_id), self.store, sample_id)

    def projection(self, job_id: str, round_: int | None, max_points: int) -> bytes:
        return project(self.job(job_id), self.store, round_, max_points)

    # -- checkpoint ------------------------------------------------------------------------

    def put_checkpoint(self, job_id: str, request: CheckpointRequest) -> CheckpointInfo:
        return self.job(job_id).put_checkpoint(request, self.store)

    def get_checkpoint(self, job_id: str) -> CheckpointInfo:
        return self.job(job_id).require_checkpoint()

    # -- internals -------------------------------------------------------------------------

    def _keeper(self, spec: JobSpec) -> JobKeeper:
        if self.make_sharded_index is not None:
            return ShardedGraphKeeper(spec.n, spec.dim, self.make_sharded_index)
        folder = self.data_dir / "indexes" / spec.job_id
        return GraphKeeper(spec.n, spec.dim, self.make_index_factory, folder)

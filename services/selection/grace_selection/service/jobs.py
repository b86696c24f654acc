"""One job held in memory: its spec, sample arrays, rounds and graph, and the lock for writes.

The service process is the job's only writer. Writes (ingest, publishing a round) hold `lock`;
reads of published rounds never take it: `rounds` (the round lifecycle) serves immutable values
and dictionary entries that are replaced whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_proto.models import (
    CheckpointInfo,
    CheckpointRequest,
    IngestResponse,
    JobResponse,
    JobStatus,
)
from grace_selection.adapters.ports import ScoreStore
from grace_selection.adapters.store_records import compute_checksum
from grace_selection.service.batches import Batch, ScoreBatch, find_duplicate
from grace_selection.service.errors import (
    ConflictError,
    InsufficientMemoryError,
    InvalidInputError,
    NotFoundError,
    UnknownJobError,
)
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.lifecycle import RoundLifecycle, get_utc_now
from grace_selection.service.projection_cache import ProjectionCache
from grace_selection.service.rounds import Body
from grace_selection.service.sharded_keeper import JobKeeper
from grace_selection.service.specs import JobSpec, read_initial_strata
from grace_selection.service.state import JobArrays

CHECKPOINT_DOCUMENT = "checkpoint"


class Job:
    def __init__(self, spec: JobSpec, keeper: JobKeeper) -> None:
        self.spec = spec
        self.keeper = keeper
        # The one-process keeper holds the job's embedding matrix as its vectors (one copy);
        # the sharded one rebuilds from the stored rows every round.
        factory = keeper.factory if isinstance(keeper, GraphKeeper) else None
        self.arrays = JobArrays(
            spec.n,
            spec.dim,
            read_initial_strata(spec.request),
            shared=factory is not None,
            matrix_dtype="float32" if factory is None else factory.vector_dtype,
        )
        self.lock = threading.Lock()
        self.rounds = RoundLifecycle(spec.job_id, spec.incarnation)
        self.checkpoint: CheckpointInfo | None = None
        self.deleted = False
        self.compaction_queued = False
        self._warmup_bodies: dict[tuple[int, int, str], Body] = {}
        self._text_offsets: npt.NDArray[np.int64] | None = None
        self.projections: ProjectionCache[bytes] = ProjectionCache(max_entries=4)

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    # -- writes ----------------------------------------------------------------------------

    def ingest(self, batch: Batch, store: ScoreStore) -> IngestResponse:
        """Record the batch durably, then apply it; a repeated batch id changes nothing."""
        with self.lock:
            self.check_alive()
            next_round = self.rounds.next_round
            if isinstance(batch, ScoreBatch) and batch.round > next_round:
                raise InvalidInputError(
                    f"round {batch.round} is ahead of the job: the next round is "
                    f"{next_round}; score for round {next_round} or earlier",
                    field="meta.round",
                )
            ids = getattr(batch, "ids", None)
            if ids is not None:
                dup = find_duplicate(ids, self.arrays.scratch)
                if dup is not None:
                    raise InvalidInputError(
                        f"id {dup} appears more than once; send each sample once per batch",
                        field="arrays.ids",
                    )
            self._reserve(batch)
            result = store.append_batch(self.job_id, batch.kind, batch.batch_id, batch.payload)
            if result.duplicate:
                if result.checksum != compute_checksum(batch.payload):
                    raise ConflictError(
                        f"batch id {batch.batch_id!r} was already used for a different "
                        f"{batch.kind} batch; use a new batch id for new data",
                        field="meta.batch_id",
                        code="batch_id_reused",
                    )
                return IngestResponse(batch_id=batch.batch_id, accepted=0, duplicate=True)
            self.arrays.apply(batch, result.seq)
        accepted = int(ids.shape[0]) if ids is not None else self.spec.n
        return IngestResponse(batch_id=batch.batch_id, accepted=accepted, duplicate=False)

    def _reserve(self, batch: Batch) -> None:
        """Allocate what applying `batch` needs before it is journalled: a journalled batch
        that then fails to apply would answer `duplicate` to its resend and fail the replay."""
        try:
            self.arrays.reserve(batch)
        except MemoryError as exc:
            needed = self.spec.n * self.spec.dim * 4
            raise InsufficientMemoryError(
                f"the service could not allocate the {needed / 2**30:.1f} GiB of this job's "
                f"embeddings ({self.spec.n} x {self.spec.dim} float32); nothing was recorded. "
                "Free memory on the service's host, or delete the job and create a smaller one",
                field="arrays.embeddings",
            ) from exc

    def check_alive(self) -> None:
        """A request that raced a DELETE of this job finds it gone (call under the lock)."""
        if self.deleted:
            raise UnknownJobError(f"job {self.job_id!r} was deleted", field="job_id")

    # -- reads -----------------------------------------------------------------------------

    def response(self) -> JobResponse:
        embedded, scored = self.arrays.counts()
        latest = self.rounds.latest
        seconds = None
        if latest is not None:
            seconds = self.rounds.manifest(latest).timings.total_seconds
        request = self.spec.request
        return JobResponse(
            job_id=self.job_id,
            incarnation=self.spec.incarnation,
            n_samples=request.n_samples,
            dim=request.dim,
            config=request.config,
            seed=request.seed,
            status=self.status(scored),
            created_at=self.spec.created_at,
            current_round=latest,
            embedded_count=embedded,
            scored_count=scored,
            checkpoint=self.checkpoint,
            last_round_seconds=seconds,
            stratum_names=request.stratum_names,
            text_source=request.text_source,
        )

    def status(self, scored: int) -> JobStatus:
        if self.rounds.computing is not None:
            return JobStatus.SELECTING
        if self.rounds.failed is not None:
            return JobStatus.FAILED
        return JobStatus.READY if scored else JobStatus.WAITING_FOR_DATA

    def warmup_body(self, key: tuple[int, int, str], make: Callable[[], Body]) -> Body:
        """Round 0's plan (every sample) encoded once per (shard, of, format)."""
        body = self._warmup_bodies.get(key)
        if body is None:
            body = make()
            if len(self._warmup_bodies) < 256:
                self._warmup_bodies[key] = body
        return body

    def clear_warmup_bodies(self) -> None:
        """The warm-up answers carry the checkpoint: forget them when it changes."""
        self._warmup_bodies = {}

    def fresh_share_of_plan(self, store: ScoreStore) -> float:
        """Share of the next round's rescore plan already scored for it (the auto policy)."""
        r = self.rounds.next_round
        scored_round = self.arrays.scored_round
        if r == 0:
            return float(np.count_nonzero(scored_round >= 0)) / max(self.spec.n, 1)
        data = self.rounds.data(r - 1, store)
        if data.rescore.size == 0:
            return 1.0
        return float(np.count_nonzero(scored_round[data.rescore] >= r)) / data.rescore.size

    def text_offsets(self, path: Path) -> npt.NDArray[np.int64]:
        """Byte offset of each line start of the text source, plus its end; read once."""
        if self._text_offsets is None:
            starts = [np.zeros(1, dtype=np.int64)]
            position = 0
            with path.open("rb") as fh:
                while chunk := fh.read(16 * 1024 * 1024):
                    newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
                    starts.append(newlines.astype(np.int64) + position + 1)
                    position += len(chunk)
            offsets = np.concatenate(starts)
            if offsets[-1] != position:  # a last line without a newline
                offsets = np.append(offsets, position)
            self._text_offsets = offsets
        return self._text_offsets

    def checkpoint_from(self, raw: bytes | None) -> None:
        self.checkpoint = None if raw is None else CheckpointInfo.model_validate_json(raw)

    def put_checkpoint(self, request: CheckpointRequest, store: ScoreStore) -> CheckpointInfo:
        """Record the trainer's newest checkpoint (stored first), which warm-up answers carry."""
        info = CheckpointInfo(
            path=request.path, step=request.step, round=request.round, published_at=get_utc_now()
        )
        with self.lock:
            self.check_alive()
            store.put_document(self.job_id, CHECKPOINT_DOCUMENT, info.model_dump_json().encode())
            self.checkpoint = info
            self.clear_warmup_bodies()
        return info

    def require_checkpoint(self) -> CheckpointInfo:
        if self.checkpoint is None:
            raise NotFoundError(
                f"job {self.job_id!r} has no checkpoint yet; PUT one to .../checkpoint",
                field="checkpoint",
                code="no_checkpoint",
            )
        return self.checkpoint

    def check_has_inputs(self) -> None:
        """Refuse a round before any score or embedding arrived: it would have nothing to use.
        Embeddings alone are enough: a first round can select on the graph (diversity,
        sampling) and learn its scores from what the trainer reports."""
        if (
            not np.isfinite(self.arrays.importance).any()
            and not np.isfinite(self.arrays.loss).any()
            and not self.arrays.embedding_seq.any()
        ):
            raise ConflictError(
                "no scores or embeddings yet: POST embeddings or importance/loss to "
                ".../embeddings or .../scores (round 0 is the warm-up: GET "
                ".../rounds/0/rescore lists every sample) before a round",
                field="scores",
                code="no_scores",
            )

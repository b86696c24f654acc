"""The Ray pool: spreads a round's shards over ScoringWorker actors and watches them finish.

This module is the one place where ScoringWorker becomes a Ray actor. Shards go to whichever
actor is free (`ray.wait`), so a slow actor takes fewer of them. Faults are handled in layers:
a killed actor process is restarted by Ray (`max_restarts`) and its shard retried
(`max_task_retries`); since every batch carries a deterministic idempotency key, re-sent
batches change nothing. A shard that fails again anyway is re-queued up to `shard_attempts`
times, after which the pool stops and raises `ScoringError` with the actor's own error.

GPUs: each actor asks Ray for `num_gpus` (fractions allowed, e.g. 0.5 puts two actors on one
GPU). By default the cluster's GPUs are shared among the actors, at most one each; on a CPU-only
cluster that is 0, and the actors run on the CPU instead of waiting for a GPU that never comes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from grace_client import CoresetClient
from grace_proto.models import RoundStatus
from grace_proto.usage import UsageError
from grace_workers.worker import NoCheckpointError, ScoringWorker, ShardReport, WorkerSettings

log = logging.getLogger(__name__)

# Errors that no retry can fix: the pool stops at once instead of re-running the shard.
_PERMANENT_ERRORS = (
    "CheckpointError",
    "DatasetFormatError",
    "NoCheckpointError",
    "GraceAPIError",
    "UnauthorizedError",
    "NotFoundError",
    "ConflictError",
)


class ScoringError(UsageError, RuntimeError):
    """A round could not be scored; the message carries the failing actor's error (the
    `grace` command prints it without the driver's own traceback)."""


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """workers: actors; shards: how many pieces the plan is cut into (default: a few per actor).

    num_cpus: CPUs per actor (Ray also sets the actor's thread count from it).
    num_gpus: GPUs per actor, fractions allowed; None shares the cluster's GPUs (at most 1 each).
    max_restarts / max_task_retries: Ray's restart of a dead actor and retry of its task.
    shard_attempts: how often the pool itself runs a shard before giving up.
    start_timeout: seconds to wait for actors to be placed and loaded.
    """

    workers: int = 1
    shards: int | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    max_restarts: int = 2
    max_task_retries: int = 2
    shard_attempts: int = 3
    start_timeout: float = 120.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        if self.shards is not None and self.shards < 1:
            raise ValueError(f"shards: must be >= 1, got {self.shards}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError(f"num_gpus: must be >= 0, got {self.num_gpus}")
        if self.shard_attempts < 1:
            raise ValueError(f"shard_attempts: must be >= 1, got {self.shard_attempts}")


@dataclass(frozen=True, slots=True)
class RoundReport:
    job: str
    round: int
    samples: int
    seconds: float
    shards: list[ShardReport] = field(default_factory=list)
    failed_attempts: int = 0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.inf

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.shards)


def gpus_per_actor(cluster_gpus: float, workers: int, requested: float | None) -> float:
    """The GPU share each actor asks for: the request, or the cluster's GPUs split, at most 1."""
    if requested is not None:
        return requested
    if cluster_gpus <= 0:
        return 0.0
    return min(1.0, cluster_gpus / workers)


def default_shards(plan_size: int, workers: int, batch_size: int) -> int:
    """About four shards per actor (so a fast actor takes more) but at least a batch each."""
    by_batches = max(1, math.ceil(plan_size / batch_size))
    return max(1, min(4 * workers, by_batches))


_REMOTE_CLASSES: dict[type[ScoringWorker], Any] = {}


def _remote_class(cls: type[ScoringWorker]) -> Any:
    """`cls` as a Ray actor class, wrapped once per class and process (not on every call)."""
    import ray

    if cls not in _REMOTE_CLASSES:
        _REMOTE_CLASSES[cls] = ray.remote(cls)
    return _REMOTE_CLASSES[cls]


class ScoringPool:
    """Actors that score rounds. Use as a context manager, or call `start` and `shutdown`."""

    def __init__(
        self,
        worker: WorkerSettings,
        pool: PoolSettings | None = None,
        *,
        worker_cls: type[ScoringWorker] = ScoringWorker,
        on_progress: Callable[[ShardReport], None] | None = None,
    ) -> None:
        self.worker = worker
        self.settings = pool or PoolSettings()
        self.worker_cls = worker_cls
        self.on_progress = on_progress
        self.actors: list[Any] = []
        self.actor_info: list[dict[str, Any]] = []

    def __enter__(self) -> ScoringPool:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def start(self) -> list[dict[str, Any]]:
        """Create the actors and wait until each has loaded its dataset; their info."""
        import ray

        if not ray.is_initialized():
            raise ScoringError("Ray is not initialised; call ray.init() (or use `grace score`)")
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        num_gpus = gpus_per_actor(
            resources.get("GPU", 0.0), self.settings.workers, self.settings.num_gpus
        )
        need = self.settings.workers * self.settings.num_cpus
        if need > resources.get("CPU", 0.0):
            raise ScoringError(
                f"{self.settings.workers} workers x {self.settings.num_cpus} CPUs need {need:g} "
                f"CPUs but the cluster has {resources.get('CPU', 0.0):g}; lower --workers or "
                "--cpus-per-worker"
            )
        if num_gpus * self.settings.workers > resources.get("GPU", 0.0) + 1e-9:
            raise ScoringError(
                f"{self.settings.workers} workers x {num_gpus:g} GPUs exceed the cluster's "
                f"{resources.get('GPU', 0.0):g} GPUs; lower --gpus-per-worker"
            )
        device = self.worker.device
        if device == "auto":
            device = "cuda" if num_gpus > 0 else "cpu"
        settings = dataclasses.replace(self.worker, device=device)
        options = {
            "num_cpus": self.settings.num_cpus,
            "num_gpus": num_gpus,
            "max_restarts": self.settings.max_restarts,
            "max_task_retries": self.settings.max_task_retries,
        }
        remote = _remote_class(self.worker_cls)
        self.actors = [
            remote.options(**options).remote(settings) for _ in range(self.settings.workers)
        ]
        refs = [actor.info.remote() for actor in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.settings.start_timeout)
        if len(ready) < len(refs):
            self.shutdown()
            raise ScoringError(
                f"only {len(ready)} of {len(refs)} actors started within "
                f"{self.settings.start_timeout:g} s; check `ray status` for free CPUs/GPUs"
            )
        self.actor_info = ray.get(refs)
        log.info("scoring actors: %s (num_gpus=%g each)", self.actor_info, num_gpus)
        return self.actor_info

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    def score_round(self, round_: int) -> RoundReport:
        """Score round `round_`'s whole rescore plan; ScoringError if a shard keeps failing."""
        import ray

        if not self.actors:
            self.start()
        with CoresetClient(self.worker.service_url, token=self.worker.token) as client:
            plan_size = _plan_size(client, self.worker.job, round_, self.worker.plan_wait)
        of = self.settings.shards or default_shards(
            plan_size, self.settings.workers, self.worker.batch_size
        )
        started = time.perf_counter()
        pending: deque[int] = deque(range(of))
        attempts = [0] * of
        idle = list(range(len(self.actors)))
        inflight: dict[Any, tuple[int, int]] = {}
        reports: list[ShardReport] = []
        failures = 0
        bar = _progress_bar(plan_size, f"round {round_}", enabled=self.settings.progress)
        try:
            while pending or inflight:
                while pending and idle:
                    shard, actor = pending.popleft(), idle.pop(0)
                    attempts[shard] += 1
                    ref = self.actors[actor].score_shard.remote(round_, shard, of)
                    inflight[ref] = (actor, shard)
                if not inflight:
                    raise ScoringError(f"round {round_}: no live actor is left to score shards")
                done, _ = ray.wait(list(inflight), num_returns=1)
                actor, shard = inflight.pop(done[0])
                try:
                    report: ShardReport = ray.get(done[0])
                except Exception as exc:
                    failures += 1
                    self._handle_failure(exc, round_, shard, of, attempts[shard], actor, idle)
                    pending.appendleft(shard)
                    continue
                reports.append(report)
                idle.append(actor)
                bar.update(report.samples)
                if self.on_progress is not None:
                    self.on_progress(report)
        except BaseException:
            for ref in inflight:  # the other shards' work is moot now; the actors stay usable
                ray.cancel(ref)
            raise
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        total = sum(r.samples for r in reports)
        log.info(
            "round %d scored: %d samples in %.2f s (%.0f samples/s), %d shards, %d duplicate "
            "requests",
            round_,
            total,
            seconds,
            total / max(seconds, 1e-9),
            of,
            sum(r.duplicates for r in reports),
        )
        return RoundReport(self.worker.job, round_, total, seconds, reports, failures)

    def _handle_failure(
        self,
        exc: Exception,
        round_: int,
        shard: int,
        of: int,
        attempt: int,
        actor: int,
        idle: list[int],
    ) -> None:
        """Re-queue the shard or raise ScoringError; put the actor back if it still lives."""
        import ray

        cause = getattr(exc, "cause", None) or exc
        name = type(cause).__name__
        where = f"round {round_} shard {shard}/{of} (attempt {attempt}, actor {actor})"
        if name in _PERMANENT_ERRORS or isinstance(cause, NoCheckpointError):
            raise ScoringError(f"{where} failed and retrying cannot help: {name}: {cause}") from exc
        if attempt >= self.settings.shard_attempts:
            raise ScoringError(
                f"{where} failed {attempt} times; last error from the actor:\n{exc}"
            ) from exc
        log.warning("%s failed, retrying: %s: %s", where, name, cause)
        try:  # an actor whose restarts are used up answers nothing: leave it out from now on
            ray.get(self.actors[actor].info.remote(), timeout=self.settings.start_timeout)
        except Exception:
            log.warning("actor %d is gone; continuing with the others", actor)
            return
        idle.append(actor)


def _plan_size(client: CoresetClient, job: str, round_: int, wait: float) -> int:
    """How many ids round `round_`'s rescore plan holds, without downloading it: every sample
    for round 0; else the count the manifest of round r - 1 (which publishes it) states,
    waiting up to `wait` seconds while that round computes. A missing round raises at once."""
    if round_ == 0:
        return client.get_job(job).n_samples
    manifest = client.get_round(job, round_ - 1)
    if manifest.status != RoundStatus.PUBLISHED:
        manifest = client.wait_for_round(job, round_ - 1, timeout=wait)
    return manifest.rescore_count


def _progress_bar(total: int, desc: str, *, enabled: bool) -> Any:
    """A tqdm bar counting samples; tqdm shows the rate as samples/s."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="samples", unit_scale=True, disable=not enabled)

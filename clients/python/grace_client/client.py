"""CoresetClient: a typed call for every endpoint of the GRACE API v1 (proto/API.md).

JSON bodies are the shared models of grace_proto.models; bulk arrays travel as binary
frames (grace_proto.frames). Retries, backoff and error mapping live in transport.py;
published rounds are cached on disk (cache.py) because they never change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from grace_client.backoff import RetryPolicy, parse_retry_after
from grace_client.cache import RoundCache, default_cache_dir
from grace_client.errors import (
    IntegrityError,
    NotFoundError,
    RoundFailedError,
    RoundNotReadyError,
    ServiceUnavailable,
)
from grace_client.payloads import (
    IndexSlice,
    Projection,
    RescorePlan,
    decode_projection,
    decode_rescore_plan,
    parse_indices_body,
    verify_slice,
)
from grace_client.transport import Transport
from grace_proto.frames import MEDIA_TYPE, decode_frame, encode_frame
from grace_proto.models import (
    CheckpointInfo,
    CheckpointRequest,
    CreateJobRequest,
    HealthResponse,
    IngestResponse,
    JobListResponse,
    JobResponse,
    RoundManifest,
    RoundStatsResponse,
    RoundStatus,
    SampleResponse,
    TriggerRoundRequest,
)
from grace_proto.names import SCORE_SOURCES, ScoreSourceName

if TYPE_CHECKING:
    from grace_client.reporter import ScoreReporter

RoundRef = int | Literal["latest"]
_T = TypeVar("_T")


class CoresetClient:
    """Talks to one GRACE service. Thread-safe; close it (or use `with`) when done.

    base_url: e.g. "http://127.0.0.1:8765". token: the service's bearer token, if it has one.
    timeout: seconds per HTTP request. retries: extra attempts on connection errors and
    429/5xx (capped exponential backoff with jitter, honouring Retry-After).
    cache_dir: where published manifests and index slices are kept (default
    $GRACE_CACHE_DIR or ~/.cache/grace).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
    ) -> None:
        self.timeout = timeout
        policy = RetryPolicy(retries=retries, base=backoff_base, cap=backoff_cap)
        self._transport = Transport(base_url, token=token, timeout=timeout, policy=policy)
        self.cache = RoundCache(default_cache_dir() if cache_dir is None else cache_dir)

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> CoresetClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- health ------------------------------------------------------------------------

    def healthz(self) -> HealthResponse:
        return HealthResponse.model_validate_json(self._request("GET", "/healthz").content)

    def readyz(self) -> HealthResponse:
        """The service's readiness; a 503 is an answer here ("not ready"), not an error."""
        response = self._transport.request("GET", "/readyz", ok_statuses=(503,))
        return HealthResponse.model_validate_json(response.content)

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text

    def check_write_access(self, job: str) -> None:
        """Raise UnauthorizedError if this client's token may not write to `job`; write nothing.

        It posts an empty score batch: the service checks the token before it reads a body,
        then refuses the empty one (400/422), and a refused request changes nothing.
        """
        self._transport.request(
            "POST", f"{_job(job)}/scores", json={}, ok_statuses=(400, 422), idempotent=True
        )

    # -- jobs --------------------------------------------------------------------------

    def create_job(self, request: CreateJobRequest) -> JobResponse:
        """Create a job; creating the same spec again is a no-op, another spec a ConflictError."""
        response = self._request("POST", "/v1/jobs", json=request.model_dump(mode="json"))
        return JobResponse.model_validate_json(response.content)

    def get_job(self, job: str) -> JobResponse:
        return JobResponse.model_validate_json(self._request("GET", _job(job)).content)

    def list_jobs(self) -> list[JobResponse]:
        return JobListResponse.model_validate_json(self._request("GET", "/v1/jobs").content).jobs

    def delete_job(self, job: str) -> None:
        self._request("DELETE", _job(job))

    # -- ingest (binary frames; every write carries an idempotency key) -----------------

    def put_strata(self, job: str, strata: npt.ArrayLike, *, batch_id: str) -> IngestResponse:
        tags = _vector("strata", strata, np.int32)
        body = encode_frame({"batch_id": batch_id}, {"strata": tags})
        return self._ingest("PUT", f"{_job(job)}/strata", body)

    def post_embeddings(
        self,
        job: str,
        ids: npt.ArrayLike,
        embeddings: npt.ArrayLike,
        *,
        batch_id: str,
        round: int,
    ) -> IngestResponse:
        id_arr = _vector("ids", ids, np.int64)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != id_arr.shape[0]:
            raise ValueError(
                f"embeddings: expected shape ({id_arr.shape[0]}, dim) to match ids, "
                f"got {list(emb.shape)}"
            )
        meta = {"batch_id": batch_id, "round": round}
        body = encode_frame(meta, {"ids": id_arr, "embeddings": emb})
        return self._ingest("POST", f"{_job(job)}/embeddings", body)

    def post_scores(
        self,
        job: str,
        ids: npt.ArrayLike,
        *,
        loss: npt.ArrayLike | None = None,
        importance: npt.ArrayLike | None = None,
        source: ScoreSourceName = "worker",
        round: int,
        step: int = 0,
        batch_id: str,
    ) -> IngestResponse:
        """Send per-sample losses and/or importance scores of `ids` as one binary batch."""
        if source not in SCORE_SOURCES:
            raise ValueError(f"source: must be one of {list(SCORE_SOURCES)}, got {source!r}")
        if loss is None and importance is None:
            raise ValueError("loss, importance: pass at least one of them")
        arrays: dict[str, npt.NDArray[Any]] = {"ids": _vector("ids", ids, np.int64)}
        for name, values in (("loss", loss), ("importance", importance)):
            if values is not None:
                arrays[name] = _vector(name, values, np.float32, length=arrays["ids"].shape[0])
        meta = {"batch_id": batch_id, "source": source, "round": round, "step": step}
        return self._ingest("POST", f"{_job(job)}/scores", encode_frame(meta, arrays))

    # -- rounds ------------------------------------------------------------------------

    def trigger_round(self, job: str, seed: int | None = None) -> RoundManifest:
        """Ask for the next round; the answer is its manifest with status `computing`."""
        body = TriggerRoundRequest(seed=seed).model_dump(mode="json")
        response = self._request("POST", f"{_job(job)}/rounds", json=body, idempotent=False)
        return RoundManifest.model_validate_json(response.content)

    def list_rounds(self, job: str) -> list[RoundManifest]:
        raw = self._request("GET", f"{_job(job)}/rounds").json()
        return [RoundManifest.model_validate(item) for item in raw]

    def get_round(self, job: str, r: RoundRef = "latest") -> RoundManifest:
        """A round's manifest, from the service; a published one is cached on disk and served
        from there only while the service is unreachable (under the job's last known
        incarnation, so never a deleted job's round)."""
        try:
            return self._vouched_manifest(job, r)[0]
        except ServiceUnavailable:
            if isinstance(r, int):
                cached = self._offline(lambda inc: self.cache.get_manifest(job, inc, r), job)
                if cached is not None:
                    return cached
            raise

    def wait_for_round(self, job: str, r: RoundRef, timeout: float) -> RoundManifest:
        """Poll until round `r` is published (a round that does not exist yet is waited for).

        Raises RoundFailedError if the service says the round failed, RoundNotReadyError on timeout.
        """
        deadline = time.monotonic() + timeout
        interval = 0.05
        while True:
            try:
                manifest = self.get_round(job, r)
            except NotFoundError:
                manifest = None
            if manifest is not None and manifest.status == RoundStatus.PUBLISHED:
                return manifest
            if manifest is not None and manifest.status == RoundStatus.FAILED:
                raise RoundFailedError(
                    f"round {manifest.round} of job {job!r} failed: {manifest.error}",
                    round_=manifest.round,
                    reason=manifest.error,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = "does not exist" if manifest is None else manifest.status.value
                raise RoundNotReadyError(
                    f"round {r} of job {job!r} not published after {timeout:.1f}s ({state})",
                    round_=r,
                    retry_after=interval,
                )
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, 2.0)

    def get_indices(
        self,
        job: str,
        r: RoundRef = "latest",
        rank: int = 0,
        world: int = 1,
        *,
        wait: float | None = None,
    ) -> IndexSlice:
        """This rank's slice of round r's coreset (API.md, "Slicing"), cached on disk.

        A cached slice is used when the service's manifest of the round (same incarnation)
        names the same sha256, or when the service is unreachable.

        While the round is computing the service answers 202 + Retry-After; this waits as
        told for up to `wait` seconds (default: the client timeout), then RoundNotReadyError.
        """
        if not (isinstance(world, int) and world >= 1 and isinstance(rank, int)):
            raise ValueError(f"world: must be an integer >= 1, got {world!r}")
        if not 0 <= rank < world:
            raise ValueError(f"rank: must be in [0, {world - 1}] for world={world}, got {rank}")
        manifest: RoundManifest | None = None
        if isinstance(r, int):
            try:
                manifest, incarnation = self._vouched_manifest(job, r)
            except ServiceUnavailable:
                cached = self._offline(
                    lambda inc: self.cache.get_slice(job, inc, r, rank, world), job
                )
                if cached is not None:
                    return cached
                raise
            if manifest.status == RoundStatus.PUBLISHED:
                cached = self.cache.get_slice(job, incarnation, r, rank, world)
                if cached is not None and cached.indices_sha256 == manifest.indices_sha256:
                    return cached
        path = f"{_job(job)}/rounds/{_round(r)}/indices"
        params = {"rank": rank, "world": world, "format": "bin"}
        response = self._get_when_ready(path, params, job=job, r=r, wait=wait)
        piece = parse_indices_body(response.headers.get("Content-Type", ""), response.content)
        verify_slice(piece, job)
        published = manifest is not None and manifest.status == RoundStatus.PUBLISHED
        if published and manifest is not None and piece.indices_sha256 != manifest.indices_sha256:
            raise IntegrityError(
                f"round {piece.round} of job {job!r}: the slice names sha256 "
                f"{piece.indices_sha256[:12]}... but the manifest {manifest.indices_sha256}; "
                "the job was probably deleted and created again meanwhile: ask again"
            )
        incarnation = piece.job_incarnation or self._job_incarnation(job)
        self.cache.remember_incarnation(job, incarnation)
        self.cache.put_slice(piece, incarnation)
        return piece

    def cached_slice(self, job: str, r: int, rank: int, world: int) -> IndexSlice | None:
        """A slice from the disk cache only (no network), under the job's newest incarnation
        the service named; None if there is none."""
        return self._offline(lambda inc: self.cache.get_slice(job, inc, r, rank, world), job)

    def latest_cached_slice(self, job: str, rank: int, world: int) -> IndexSlice | None:
        """The newest cached slice of (rank, world) under the job's newest known incarnation."""
        return self._offline(lambda inc: self.cache.latest_slice(job, inc, rank, world), job)

    def get_rescore_plan(
        self, job: str, r: RoundRef, shard: int = 0, of: int = 1, *, wait: float | None = None
    ) -> RescorePlan:
        """The ids shard `shard` of `of` must score *for* round r, and the checkpoint to use.

        Round 0's plan is every sample; round r's is the plan published with round r - 1
        (while that round computes, this waits up to `wait` seconds like get_indices).
        """
        if not (of >= 1 and 0 <= shard < of):
            raise ValueError(f"shard: must be in [0, {of - 1}] for of={of}, got {shard}")
        params = {"shard": shard, "of": of, "format": "bin"}
        path = f"{_job(job)}/rounds/{_round(r)}/rescore"
        response = self._get_when_ready(path, params, job=job, r=r, wait=wait)
        return decode_rescore_plan(
            decode_frame(response.content),
            job=job,
            round_=r if isinstance(r, int) else -1,  # "latest": the frame's meta says which
            shard=shard,
            of=of,
        )

    def get_round_stats(
        self, job: str, r: RoundRef, bins: int = 30, *, wait: float | None = None
    ) -> RoundStatsResponse:
        path = f"{_job(job)}/rounds/{_round(r)}/stats"
        response = self._get_when_ready(path, {"bins": bins}, job=job, r=r, wait=wait)
        return RoundStatsResponse.model_validate_json(response.content)

    def get_projection(
        self, job: str, round: int | None = None, max_points: int | None = None
    ) -> Projection:
        params = {k: v for k, v in (("round", round), ("max_points", max_points)) if v is not None}
        response = self._request("GET", f"{_job(job)}/projection", params=params)
        return decode_projection(decode_frame(response.content))

    # -- checkpoints and samples -------------------------------------------------------

    def put_checkpoint(
        self, job: str, path: str, step: int, round: int | None = None
    ) -> CheckpointInfo:
        body = CheckpointRequest(path=path, step=step, round=round).model_dump(mode="json")
        response = self._request("PUT", f"{_job(job)}/checkpoint", json=body)
        return CheckpointInfo.model_validate_json(response.content)

    def get_checkpoint(self, job: str) -> CheckpointInfo | None:
        """The job's checkpoint; None if it has none, NotFoundError if the job is unknown."""
        try:
            response = self._request("GET", f"{_job(job)}/checkpoint")
        except NotFoundError:
            self.get_job(job)  # raises NotFoundError itself when the job is what is missing
            return None
        return CheckpointInfo.model_validate_json(response.content)

    def get_sample(self, job: str, id: int) -> SampleResponse:
        response = self._request("GET", f"{_job(job)}/samples/{int(id)}")
        return SampleResponse.model_validate_json(response.content)

    # -- training-side reporting -------------------------------------------------------

    def reporter(self, job: str, **options: Any) -> ScoreReporter:
        """A background ScoreReporter bound to this client (see grace_client.reporter)."""
        from grace_client.reporter import ScoreReporter

        return ScoreReporter(self, job, **options)

    # -- plumbing ----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        return self._transport.request(
            method, path, params=params, json=json, idempotent=idempotent
        )

    def _vouched_manifest(self, job: str, r: RoundRef) -> tuple[RoundManifest, str]:
        """The service's manifest of round r and the job's incarnation; both are recorded."""
        response = self._request("GET", f"{_job(job)}/rounds/{_round(r)}")
        manifest = RoundManifest.model_validate_json(response.content)
        incarnation = manifest.job_incarnation or self._job_incarnation(job)
        self.cache.remember_incarnation(job, incarnation)
        self.cache.put_manifest(manifest, incarnation)
        return manifest, incarnation

    def _job_incarnation(self, job: str) -> str:
        """The job's incarnation as the service names it now (for rounds published before
        manifests carried it)."""
        return self.get_job(job).incarnation

    def _offline(self, read: Callable[[str], _T | None], job: str) -> _T | None:
        incarnation = self.cache.known_incarnation(job)
        return None if incarnation is None else read(incarnation)

    def _get_when_ready(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        job: str,
        r: RoundRef,
        wait: float | None,
    ) -> httpx.Response:
        """GET a round resource, waiting as told while the service answers 202 (computing)."""
        deadline = time.monotonic() + (self.timeout if wait is None else wait)
        while True:
            response = self._transport.request("GET", path, params=params, ok_statuses=(202,))
            if response.status_code != 202:
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After")) or 1.0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RoundNotReadyError(
                    f"round {r} of job {job!r} is still computing; retry in {retry_after:.1f}s",
                    round_=r,
                    retry_after=retry_after,
                )
            time.sleep(min(retry_after, remaining))

    def _ingest(self, method: str, path: str, body: bytes) -> IngestResponse:
        response = self._transport.request(method, path, content=body, content_type=MEDIA_TYPE)
        return IngestResponse.model_validate_json(response.content)


def _job(job: str) -> str:
    return f"/v1/jobs/{quote(job, safe='')}"


def _round(r: RoundRef) -> str:
    if r == "latest":
        return "latest"
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"round: must be an integer >= 0 or 'latest', got {r!r}")
    return str(r)


def _vector(
    name: str, values: npt.ArrayLike, dtype: type[np.generic], length: int | None = None
) -> npt.NDArray[Any]:
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {list(arr.shape)}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name}: has {arr.shape[0]} values but ids has {length}; pass one per id")
    return arr

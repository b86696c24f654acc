"""Rounds: trigger the next one, read manifests, slices for trainer ranks and worker shards.

The indices route is the hot path: a published round's slices are cached as encoded bytes and
answered on the event loop without a thread hop; only a cache miss reads the store in a thread.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi.concurrency import run_in_threadpool

from grace_proto.models import (
    ErrorResponse,
    IndicesResponse,
    RescorePlanResponse,
    RoundManifest,
    RoundStatsResponse,
    TriggerRoundRequest,
)
from grace_selection.api.auth import READ, WRITE
from grace_selection.api.deps import (
    FAILED_JOB,
    JSON_MEDIA,
    MALFORMED_JSON,
    UNAUTHORIZED,
    Format,
    JobId,
    RoundRef,
    Service,
    describe_binary_answer,
    make_json_response,
)
from grace_selection.service.errors import InvalidInputError

router = APIRouter(
    tags=["rounds"],
    responses={
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        **UNAUTHORIZED,
        **FAILED_JOB,
    },
)
_COMPUTING: dict[int | str, dict[str, Any]] = {
    202: {"model": RoundManifest, "description": "still computing; retry after Retry-After s"}
}
Rank = Annotated[int, Query(ge=0, le=1_000_000, description="this trainer's rank")]
World = Annotated[int, Query(ge=1, le=1_000_000, description="number of trainer ranks")]
Shard = Annotated[int, Query(ge=0, le=1_000_000, description="this worker's shard")]
Of = Annotated[int, Query(ge=1, le=1_000_000, description="number of worker shards")]


@router.post(
    "/v1/jobs/{job}/rounds",
    operation_id="trigger_round",
    status_code=202,
    response_model=RoundManifest,
    dependencies=WRITE,
    responses={
        409: {
            "model": ErrorResponse,
            "description": "`no_scores` yet, or `job_failed_to_load`",
        },
        **MALFORMED_JSON,
    },
)
async def trigger_round(
    job: JobId, service: Service, request: Annotated[TriggerRoundRequest | None, Body()] = None
) -> Response:
    manifest = await run_in_threadpool(service.trigger_round, job, request)
    location = f"/v1/jobs/{job}/rounds/{manifest.round}"
    return make_json_response(manifest, 202, Location=location, **{"Retry-After": "1"})


@router.get(
    "/v1/jobs/{job}/rounds",
    operation_id="list_rounds",
    response_model=list[RoundManifest],
    dependencies=READ,
)
async def list_rounds(job: JobId, service: Service) -> Response:
    manifests = service.list_rounds(job)
    body = b"[" + b",".join(m.model_dump_json().encode() for m in manifests) + b"]"
    return Response(body, media_type=JSON_MEDIA)


@router.get(
    "/v1/jobs/{job}/rounds/{r}",
    operation_id="get_round",
    response_model=RoundManifest,
    dependencies=READ,
)
async def get_round(job: JobId, r: RoundRef, service: Service) -> Response:
    return Response(service.manifest_json(job, r), media_type=JSON_MEDIA)


@router.get(
    "/v1/jobs/{job}/rounds/{r}/indices",
    operation_id="get_indices",
    dependencies=READ,
    responses={**describe_binary_answer(IndicesResponse, "this rank's slice"), **_COMPUTING},
)
async def get_indices(
    job: JobId,
    r: RoundRef,
    service: Service,
    rank: Rank = 0,
    world: World = 1,
    format: Format = "bin",
) -> Response:
    if rank >= world:
        raise InvalidInputError(f"rank {rank} must be < world {world}", field="rank")
    body = service.cached_indices(job, r, rank, world, format)
    if body is None:
        body = await run_in_threadpool(service.indices, job, r, rank, world, format)
    return Response(body.content, media_type=body.media_type)


@router.get(
    "/v1/jobs/{job}/rounds/{r}/rescore",
    operation_id="get_rescore_plan",
    dependencies=READ,
    responses={
        **describe_binary_answer(RescorePlanResponse, "ids this shard scores"),
        **_COMPUTING,
    },
)
async def get_rescore_plan(
    job: JobId, r: RoundRef, service: Service, shard: Shard = 0, of: Of = 1, format: Format = "bin"
) -> Response:
    if shard >= of:
        raise InvalidInputError(f"shard {shard} must be < of {of}", field="shard")
    body = await run_in_threadpool(service.rescore, job, r, shard, of, format)
    return Response(body.content, media_type=body.media_type)


@router.get(
    "/v1/jobs/{job}/rounds/{r}/stats",
    operation_id="get_round_stats",
    response_model=RoundStatsResponse,
    dependencies=READ,
    responses=_COMPUTING,
)
async def get_round_stats(
    job: JobId,
    r: RoundRef,
    service: Service,
    bins: Annotated[int, Query(ge=1, le=1000)] = 30,
) -> Response:
    return make_json_response(await run_in_threadpool(service.round_stats, job, r, bins))

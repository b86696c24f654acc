"""Inspection for the dashboard: one sample over the rounds, and a 2-D map of the data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from grace_proto.frames import MEDIA_TYPE
from grace_proto.models import ErrorResponse, SampleResponse
from grace_selection.api.auth import READ
from grace_selection.api.deps import JobId, Service, describe_binary_answer, make_json_response
from grace_selection.service.inspection import describe_sample, project

router = APIRouter(
    tags=["inspection"],
    dependencies=READ,
    responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)


@router.get(
    "/v1/jobs/{job}/samples/{sample_id}",
    operation_id="get_sample",
    response_model=SampleResponse,
)
async def get_sample(
    job: JobId, sample_id: Annotated[int, Path(ge=0)], service: Service
) -> Response:
    def sample() -> SampleResponse:
        return describe_sample(service.job(job), service.store, sample_id)

    return make_json_response(await run_in_threadpool(sample))


@router.get(
    "/v1/jobs/{job}/projection",
    operation_id="get_projection",
    responses=describe_binary_answer(None, "frame: ids, xy (n, 2), importance, in_coreset"),
)
async def get_projection(
    job: JobId,
    service: Service,
    round: Annotated[int | None, Query(ge=0, description="default: the newest round")] = None,
    max_points: Annotated[int, Query(ge=1, le=200_000)] = 20_000,
) -> Response:
    def frame() -> bytes:
        return project(service.job(job), service.store, round, max_points)

    return Response(await run_in_threadpool(frame), media_type=MEDIA_TYPE)

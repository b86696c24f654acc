"""Inspection for the dashboard: one sample over the rounds, and a 2-D map of the data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from grace_proto.frames import MEDIA_TYPE
from grace_proto.models import ErrorResponse, SampleResponse
from grace_selection.api.auth import READ
from grace_selection.api.deps import (
    FAILED_JOB,
    UNAUTHORIZED,
    JobId,
    Service,
    describe_binary_answer,
    make_json_response,
)

router = APIRouter(
    tags=["inspection"],
    dependencies=READ,
    responses={
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        **UNAUTHORIZED,
        **FAILED_JOB,
    },
)


@router.get(
    "/v1/jobs/{job}/samples/{sample_id}",
    operation_id="get_sample",
    response_model=SampleResponse,
)
async def get_sample(
    job: JobId, sample_id: Annotated[int, Path(ge=0)], service: Service
) -> Response:
    return make_json_response(await run_in_threadpool(service.sample, job, sample_id))


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
    frame = await run_in_threadpool(service.projection, job, round, max_points)
    return Response(frame, media_type=MEDIA_TYPE)

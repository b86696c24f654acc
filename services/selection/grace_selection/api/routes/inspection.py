"""Inspection for the dashboard: one sample over the rounds, a 2-D map of the data, a round
against the previous one, and a round's per-sample table as CSV or Parquet."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from grace_proto.frames import MEDIA_TYPE
from grace_proto.models import ErrorResponse, RoundDiffResponse, SampleResponse
from grace_selection.api.auth import READ
from grace_selection.api.deps import (
    FAILED_JOB,
    UNAUTHORIZED,
    JobId,
    RoundRef,
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


@router.get(
    "/v1/jobs/{job}/rounds/{r}/diff",
    operation_id="get_round_diff",
    response_model=RoundDiffResponse,
    responses={202: {"description": "the round is still computing"}},
)
async def get_round_diff(
    job: JobId,
    r: RoundRef,
    service: Service,
    limit: Annotated[
        int, Query(ge=0, le=1000, description="samples listed per direction (entered, left)")
    ] = 50,
) -> Response:
    return make_json_response(await run_in_threadpool(service.round_diff, job, r, limit))


@router.get(
    "/v1/jobs/{job}/rounds/{r}/table",
    operation_id="get_round_table",
    responses={
        200: {
            "description": "one row per sample (docs/dashboard.md lists the columns)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        },
        202: {"description": "the round is still computing"},
        501: {"model": ErrorResponse, "description": "Parquet asked for, pyarrow missing"},
    },
)
async def get_round_table(
    job: JobId,
    r: RoundRef,
    service: Service,
    format: Annotated[Literal["csv", "parquet"], Query(description="csv or parquet")] = "csv",
    rows: Annotated[
        Literal["all", "coreset", "changed"],
        Query(description="every sample, the coreset, or who entered or left"),
    ] = "all",
) -> Response:
    export = await run_in_threadpool(service.round_table, job, r, rows, format)
    disposition = f'attachment; filename="{export.filename}"'
    return StreamingResponse(
        export.chunks, media_type=export.media_type, headers={"Content-Disposition": disposition}
    )

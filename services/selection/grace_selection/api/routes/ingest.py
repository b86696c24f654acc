"""Ingest: embeddings, scores and strata as binary frames (scores also as small JSON).

The body is read on the event loop (it is I/O); parsing, the durable store write and applying
the batch run in a worker thread so that reads are never held up by a large batch.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from grace_proto.frames import MEDIA_TYPE
from grace_proto.models import ErrorResponse, IngestResponse, ScoreBatchRequest
from grace_selection.api.auth import WRITE
from grace_selection.api.deps import (
    BINARY_BODY,
    INSUFFICIENT_MEMORY,
    JSON_MEDIA,
    UNAUTHORIZED,
    JobId,
    Service,
    make_json_response,
    read_frame,
    read_media_type,
)
from grace_selection.api.errors import ApiError

router = APIRouter(
    tags=["ingest"],
    dependencies=WRITE,
    responses={
        400: {
            "model": ErrorResponse,
            "description": "`invalid_frame`: not a frame; `malformed_json`: not JSON",
        },
        404: {"model": ErrorResponse},
        409: {
            "model": ErrorResponse,
            "description": "`batch_id_reused` for other data, or `job_failed_to_load`",
        },
        413: {"model": ErrorResponse, "description": "body over GRACE_MAX_BODY_BYTES"},
        415: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        **UNAUTHORIZED,
        **INSUFFICIENT_MEMORY,
    },
)

_SCORES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            JSON_MEDIA: {"schema": {"$ref": "#/components/schemas/ScoreBatchRequest"}},
        },
    }
}


@router.post(
    "/v1/jobs/{job}/embeddings",
    operation_id="post_embeddings",
    response_model=IngestResponse,
    openapi_extra=BINARY_BODY,
)
async def post_embeddings(job: JobId, request: Request, service: Service) -> Response:
    body = await read_frame(request)
    return make_json_response(await run_in_threadpool(service.ingest, job, "embeddings", body))


@router.post(
    "/v1/jobs/{job}/scores",
    operation_id="post_scores",
    response_model=IngestResponse,
    openapi_extra=_SCORES_BODY,
)
async def post_scores(job: JobId, request: Request, service: Service) -> Response:
    if read_media_type(request) == JSON_MEDIA:
        raw = await request.body()
        try:
            batch = ScoreBatchRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise _json_error(exc) from exc
        return make_json_response(await run_in_threadpool(service.ingest_scores_json, job, batch))
    body = await read_frame(request)
    return make_json_response(await run_in_threadpool(service.ingest, job, "scores", body))


@router.put(
    "/v1/jobs/{job}/strata",
    operation_id="put_strata",
    response_model=IngestResponse,
    openapi_extra=BINARY_BODY,
)
async def put_strata(job: JobId, request: Request, service: Service) -> Response:
    body = await read_frame(request)
    return make_json_response(await run_in_threadpool(service.ingest, job, "strata", body))


def _json_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return ApiError(
            400,
            "malformed_json",
            f"the body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])}); "
            "send a ScoreBatchRequest object",
            field="body",
        )
    field = ".".join(str(p) for p in first["loc"])
    return ApiError(
        422, "invalid_field", f"{field}: {first['msg']}; fix this value and resend", field=field
    )

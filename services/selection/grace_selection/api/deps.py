"""Annotated dependencies and parameters shared by the routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from grace_proto.frames import MEDIA_TYPE
from grace_proto.models import JOB_ID_PATTERN, ErrorResponse
from grace_selection.api.errors import ApiError
from grace_selection.service.registry import SelectionService


async def get_service(request: Request) -> SelectionService:
    service: SelectionService = request.app.state.service
    return service


Service = Annotated[SelectionService, Depends(get_service)]
JobId = Annotated[
    str, Path(pattern=JOB_ID_PATTERN, description="the job id (lowercase letters, digits, . _ -)")
]
RoundRef = Annotated[
    str, Path(pattern=r"^(latest|[0-9]{1,12})$", description="a round number or `latest`")
]
Format = Annotated[
    Literal["bin", "json"], Query(description="`bin`: a frame (FRAMES.md); `json`: JSON")
]

# Error answers every route of a kind really sends, for the OpenAPI document (issue 14).
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "`unauthorized`: the bearer token is missing or wrong (writes always "
        "need it when the service has a token; reads when GRACE_READS_REQUIRE_TOKEN is set)",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    }
}
MALFORMED_JSON: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "`malformed_json`: the body is not valid JSON"}
}
INSUFFICIENT_MEMORY: dict[int | str, dict[str, Any]] = {
    507: {
        "model": ErrorResponse,
        "description": "`insufficient_memory`: the job's arrays could not be allocated; "
        "nothing was recorded",
    }
}
FAILED_JOB: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorResponse,
        "description": "`job_failed_to_load`: the job is stored but failed to load at "
        "start-up; only DELETE works on it",
    }
}

BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}
JSON_MEDIA = "application/json"


def describe_binary_answer(model: type[BaseModel] | None, description: str) -> dict[int | str, Any]:
    """OpenAPI for a 200 that is a frame (and, with a model, optionally JSON)."""
    content: dict[str, Any] = {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}
    answer: dict[str, Any] = {"description": description, "content": content}
    if model is not None:
        answer["model"] = model
    return {200: answer}


def read_media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_frame(request: Request) -> bytes:
    """The raw body of a frame upload (the size limit is enforced by the BodyLimit middleware)."""
    kind = read_media_type(request)
    if kind != MEDIA_TYPE:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"this endpoint takes a binary frame: send Content-Type: {MEDIA_TYPE} "
            f"(got {kind or 'none'}); see proto/FRAMES.md",
            field="Content-Type",
        )
    return await request.body()


def make_json_response(model: BaseModel, status_code: int = 200, **headers: str) -> Response:
    """Serialise once with pydantic's fast path; skips FastAPI's re-validation of the answer."""
    return Response(
        model.model_dump_json(),
        status_code=status_code,
        media_type=JSON_MEDIA,
        headers=headers,
    )

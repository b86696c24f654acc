"""Every error leaves as an ErrorResponse: what was wrong, which field, and the fix.

Service errors map to a status by class; FastAPI's validation errors and HTTP errors are
reshaped into the same body so that clients parse one error format.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grace_proto.models import ErrorResponse
from grace_selection.adapters.store_records import StoreError
from grace_selection.service.errors import (
    ConflictError,
    InsufficientMemoryError,
    InvalidInputError,
    MalformedRequestError,
    MissingExtraError,
    NotFoundError,
    NotReadyError,
    RoundComputingError,
    ServiceError,
)

log = logging.getLogger("grace_selection.api")

_STATUS: list[tuple[type[ServiceError], int]] = [
    (MalformedRequestError, 400),
    (InvalidInputError, 422),
    (NotFoundError, 404),
    (ConflictError, 409),
    (NotReadyError, 503),
    (MissingExtraError, 501),
    (InsufficientMemoryError, 507),
]
_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An error raised by the HTTP layer itself (auth, body limits, media types)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.field, self.headers, self.extra = field, headers, extra


def make_error_response(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=code, detail=detail, field=field, extra=extra)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):
        raise exc
    return make_error_response(
        exc.status,
        exc.code,
        exc.detail,
        field=exc.field,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _service_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RoundComputingError):
        # Not an error for the caller: the round exists and is being computed; come back later.
        return Response(
            exc.manifest.model_dump_json(),
            status_code=202,
            media_type="application/json",
            headers={"Retry-After": str(exc.retry_after)},
        )
    if not isinstance(exc, ServiceError):
        raise exc
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
    retry = {"Retry-After": "1"} if status == 503 else None
    return make_error_response(
        status, exc.code, exc.detail, field=exc.field, headers=retry, extra=exc.extra
    )


async def _store_error(request: Request, exc: Exception) -> Response:
    log.error("store error on %s %s: %s", request.method, request.url.path, exc)
    return make_error_response(
        503,
        "store_unavailable",
        f"the score store cannot serve this request ({exc}); retry later",
        headers={"Retry-After": "2"},
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):
        raise exc
    errors: Sequence[Any] = exc.errors()
    first = errors[0] if errors else {}
    field = _dotted(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return make_error_response(
            400,
            "malformed_json",
            f"the body is not valid JSON ({reason}); send a JSON object",
            field="body",
        )
    message = str(first.get("msg", "is invalid"))
    detail = f"{field or 'body'}: {message}; fix this value and send the request again"
    extra = None
    if len(errors) > 1:
        listed = [{"field": _dotted(e.get("loc", ())), "msg": e.get("msg")} for e in errors]
        extra = {"errors": listed}
    return make_error_response(422, "invalid_field", detail, field=field or None, extra=extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see proto/API.md for the routes"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}; see proto/API.md"
    headers = dict(exc.headers) if exc.headers else None
    return make_error_response(exc.status_code, code, detail, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _internal_error(exc)


def _internal_error(exc: BaseException) -> JSONResponse:
    return make_error_response(
        500,
        "internal_error",
        f"the service failed unexpectedly ({type(exc).__name__}); the log has the details",
    )


class UnexpectedErrorGuard:
    """Pure ASGI middleware: an unexpected exception becomes a 500 and goes no further.

    Starlette's own last-resort handler answers 500 and then re-raises, and uvicorn closes a
    connection whose app raised: the client's next request on that keep-alive connection is
    reset. Answering here, inside Starlette's handler, keeps the connection usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if started:
                raise  # half an answer is out: only closing the connection can end it
            await _internal_error(exc)(scope, receive, send)


def _dotted(loc: Sequence[Any]) -> str:
    """("body", "config", "k") -> "config.k"; ("query", "rank") -> "rank"."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)

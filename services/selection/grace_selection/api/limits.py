"""The request body limit (GRACE_MAX_BODY_BYTES), enforced before and while a body is read.

A declared Content-Length over the limit is refused at once with 413, before any byte is read;
a chunked body is counted as it arrives and refused the moment it passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grace_selection.api.errors import ApiError, make_error_response


def make_too_large_error(limit: int, size: int | None) -> ApiError:
    what = f"the body is {size} bytes" if size is not None else "the body is too large"
    return ApiError(
        413,
        "body_too_large",
        f"{what}; this service accepts at most {limit} bytes per request "
        "(GRACE_MAX_BODY_BYTES): send smaller batches",
        field="body",
        extra={"limit_bytes": limit},
    )


class BodyLimit:
    """Pure ASGI middleware; the counting receive raises ApiError, which the app's handler
    turns into a 413 response because the body is read inside the route."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            error = make_too_large_error(self.limit, declared)
            response = make_error_response(
                error.status, error.code, error.detail, field=error.field, extra=error.extra
            )
            await response(scope, receive, send)
            return
        seen = 0
        limit = self.limit

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise make_too_large_error(limit, None)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

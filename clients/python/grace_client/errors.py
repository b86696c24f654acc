"""What can go wrong when talking to the GRACE service, as exceptions a trainer can catch.

`GraceAPIError` carries the server's own explanation (an `ErrorResponse` body) of a 4xx;
`ServiceUnavailable` means the service could not be reached or kept failing after every retry.
"""

from __future__ import annotations

from typing import Any


class GraceError(Exception):
    """Base class of every error the client raises on purpose."""


class GraceAPIError(GraceError):
    """The service refused a request (4xx) and said why.

    status: the HTTP status; error: the server's short machine-readable code;
    detail: the server's sentence for people (what was wrong and the fix);
    field: the request field at fault, dotted, when the server named one.
    """

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        field: str | None = None,
        *,
        method: str = "",
        url: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        where = f" (field {field!r})" if field else ""
        request = f" [{method} {url}]" if method else ""
        super().__init__(f"{status} {error}: {detail}{where}{request}")
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field
        self.method = method
        self.url = url
        self.extra = extra


class UnauthorizedError(GraceAPIError):
    """401/403: the bearer token is missing or wrong; pass `token=` to CoresetClient."""


class NotFoundError(GraceAPIError):
    """404: the job, round, sample or checkpoint does not exist (yet)."""


class ConflictError(GraceAPIError):
    """409: the request contradicts what the service already holds (e.g. a job id reused)."""


class ServiceUnavailable(GraceError):  # noqa: N818 - the name other roles code against
    """The service did not answer usefully after every retry.

    attempts: how many requests were made; status: the last HTTP status (None if the last
    attempt failed to connect); detail: the last server message or connection error.
    """

    def __init__(
        self, message: str, *, attempts: int, status: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status
        self.detail = detail


class RoundNotReadyError(GraceError):
    """The round is still being computed (202); try again after `retry_after` seconds."""

    def __init__(self, message: str, *, round_: int | str, retry_after: float) -> None:
        super().__init__(message)
        self.round = round_
        self.retry_after = retry_after


class RoundFailedError(GraceError):
    """The service could not compute the round; `reason` is its error message."""

    def __init__(self, message: str, *, round_: int, reason: str | None) -> None:
        super().__init__(message)
        self.round = round_
        self.reason = reason


class IntegrityError(GraceError):
    """An index list did not match the sha256 its manifest promised: it was not used."""


def error_for_status(
    status: int,
    error: str,
    detail: str,
    field: str | None,
    *,
    method: str,
    url: str,
    extra: dict[str, Any] | None = None,
) -> GraceAPIError:
    """The most specific GraceAPIError subclass for a 4xx status."""
    cls: type[GraceAPIError] = GraceAPIError
    if status in (401, 403):
        cls = UnauthorizedError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    return cls(status, error, detail, field, method=method, url=url, extra=extra)

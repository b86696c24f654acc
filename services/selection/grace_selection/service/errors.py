"""What can go wrong in the service layer, each error naming the field at fault and the fix.

The API maps each class to an HTTP status (api/errors.py); nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """code: short machine-readable name; detail: a sentence for people; field: dotted path."""

    code = "error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra
        if code is not None:
            self.code = code


class MalformedRequestError(ServiceError):
    """The body cannot be parsed at all (not a frame, not JSON)."""

    code = "malformed_request"


class InvalidInputError(ServiceError):
    """The body parses but a value is wrong: dtype, shape, range, NaN."""

    code = "invalid_field"


class NotFoundError(ServiceError):
    code = "not_found"


class UnknownJobError(NotFoundError):
    code = "unknown_job"


class UnknownRoundError(NotFoundError):
    code = "unknown_round"


class ConflictError(ServiceError):
    """The request contradicts what is stored (another spec, a reused batch id, no scores)."""

    code = "conflict"


class MissingExtraError(ServiceError):
    """The request needs an optional package this installation lacks; `extra` names it."""

    code = "missing_extra"


class JobFailedError(ConflictError):
    """The job is stored but could not be loaded at start-up; it can only be deleted."""

    code = "job_failed_to_load"


class InsufficientMemoryError(ServiceError):
    """The process could not allocate what a request needs; nothing of it was recorded."""

    code = "insufficient_memory"


class NotReadyError(ServiceError):
    """The service is still loading its state, or its store is unreachable."""

    code = "not_ready"


class RoundComputingError(ServiceError):
    """The round asked for is still being computed; ask again after `retry_after` seconds."""

    code = "round_computing"

    def __init__(self, detail: str, *, manifest: Any, retry_after: int = 1) -> None:
        super().__init__(detail, field="round")
        self.manifest = manifest
        self.retry_after = retry_after

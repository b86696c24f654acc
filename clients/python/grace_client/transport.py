"""One HTTP request to the service, retried the way a long training run needs.

Connection errors and 429/5xx are retried with capped exponential backoff and jitter,
honouring Retry-After; a 4xx becomes a GraceAPIError carrying the server's message; when
the retries run out the caller gets ServiceUnavailable. Writes are safe to repeat because
every write carries a batch id; the one call that is not (triggering a round) is repeated
only when the service provably did not start it (connection refused, 429, 503).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import httpx

from grace_client.backoff import REFUSED_STATUSES, RETRY_STATUSES, RetryPolicy, parse_retry_after
from grace_client.errors import ServiceUnavailable, error_for_status

log = logging.getLogger("grace_client")

# Errors raised before a single byte of the request could have reached the service.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Transport:
    """A pooled httpx.Client plus the retry loop; thread-safe (httpx pools are)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout: float,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https://, got {base_url!r} "
                "(e.g. http://127.0.0.1:8765)"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        headers = {"User-Agent": "grace-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        idempotent: bool = True,
        ok_statuses: Collection[int] = (),
    ) -> httpx.Response:
        """The first response below 400 (or in `ok_statuses`), after retries; raises otherwise.

        `ok_statuses` lists error statuses the caller handles itself (e.g. 503 from /readyz,
        which answers "not ready" rather than "try again").
        """
        headers = {"Content-Type": content_type} if content_type else None
        attempts = self.policy.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(
                    method, path, params=params, json=json, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                can_retry = idempotent or isinstance(exc, _NOT_SENT)
                reason = f"{type(exc).__name__}: {exc}"
                if not can_retry or attempt == attempts:
                    raise ServiceUnavailable(
                        f"GRACE service at {self.base_url} unreachable for {method} {path} "
                        f"after {attempt} attempt(s): {reason}",
                        attempts=attempt,
                        detail=reason,
                    ) from exc
                self._wait(attempt, None, f"{method} {path}: {reason}")
                continue
            status = response.status_code
            if status < 400 or status in ok_statuses:
                return response
            retryable = status in RETRY_STATUSES and (idempotent or status in REFUSED_STATUSES)
            if retryable and attempt < attempts:
                wait_hint = parse_retry_after(response.headers.get("Retry-After"))
                self._wait(attempt, wait_hint, f"{method} {path}: HTTP {status}")
                continue
            error, detail, field, extra = _parse_error_body(response)
            if status < 500 and status != 429:
                raise error_for_status(
                    status, error, detail, field, method=method, url=path, extra=extra
                )
            raise ServiceUnavailable(
                f"GRACE service at {self.base_url} answered {status} to {method} {path} "
                f"after {attempt} attempt(s): {error}: {detail}",
                attempts=attempt,
                status=status,
                detail=detail,
            )
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _wait(self, attempt: int, retry_after: float | None, reason: str) -> None:
        delay = self.policy.delay(attempt, retry_after)
        log.info("retrying in %.2fs (attempt %d failed: %s)", delay, attempt, reason)
        self._sleep(delay)


def _parse_error_body(
    response: httpx.Response,
) -> tuple[str, str, str | None, dict[str, Any] | None]:
    """(error, detail, field, extra) of an ErrorResponse body, or the best a foreign one gives."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return f"http_{response.status_code}", text[:500] or response.reason_phrase, None, None
    if isinstance(body, dict):
        error = body.get("error")
        detail = body.get("detail")
        field = body.get("field")
        extra = body.get("extra")
        return (
            str(error) if error else f"http_{response.status_code}",
            detail if isinstance(detail, str) else str(detail),
            str(field) if field is not None else None,
            extra if isinstance(extra, dict) else None,
        )
    return f"http_{response.status_code}", str(body)[:500], None, None

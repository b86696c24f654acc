"""How long to wait before trying a request again: capped exponential backoff with full jitter."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass, field

# Statuses that mean "the service is there but cannot take this now": worth another try.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that mean the request was refused before any work was done, so that even a
# non-idempotent call (triggering a round) can safely be sent again.
REFUSED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """retries: extra attempts after the first one (0 disables retrying).
    base: the first backoff in seconds; each further attempt doubles it, up to `cap`.
    cap: the longest backoff the policy picks by itself.
    max_retry_after: the longest server-requested `Retry-After` honoured (seconds); a
        longer request is clamped so that a misconfigured proxy cannot stall training.
    """

    retries: int = 5
    base: float = 0.25
    cap: float = 8.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not (self.base > 0 and self.cap >= self.base):
            raise ValueError(f"need 0 < base <= cap, got base={self.base}, cap={self.cap}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number `attempt` (1-based).

        Full jitter (uniform in [0, backoff]) spreads out many trainers that all lost the
        service at once; when the server said how long to wait (Retry-After), it knows best,
        so that wait is used as is (clamped to `max_retry_after`).
        """
        backoff = min(self.cap, self.base * (2.0 ** (attempt - 1)))
        jittered = self.rng.uniform(0.0, backoff)
        if retry_after is None:
            return jittered
        return max(min(retry_after, self.max_retry_after), 0.0)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)

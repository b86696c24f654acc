"""The trainer's side of GRACE: an HTTP client, a background score reporter and (with torch)
a resumable distributed sampler over the service's coreset rounds.

Importing this package needs only httpx, numpy and pydantic.
"""

from __future__ import annotations

from grace_client.cache import RoundCache
from grace_client.client import CoresetClient
from grace_client.errors import (
    ConflictError,
    GraceAPIError,
    GraceError,
    IntegrityError,
    NotFoundError,
    RoundFailedError,
    RoundNotReadyError,
    ServiceUnavailable,
    UnauthorizedError,
)
from grace_client.payloads import IndexSlice, Projection, RescorePlan
from grace_client.reporter import ReporterStats, ScoreReporter

__all__ = [
    "ConflictError",
    "CoresetClient",
    "GraceAPIError",
    "GraceError",
    "IndexSlice",
    "IntegrityError",
    "NotFoundError",
    "Projection",
    "ReporterStats",
    "RescorePlan",
    "RoundCache",
    "RoundFailedError",
    "RoundNotReadyError",
    "ScoreReporter",
    "ServiceUnavailable",
    "UnauthorizedError",
]


"""The trainer's side of GRACE: an HTTP client, a background score reporter and (with torch)
a resumable distributed sampler over the service's coreset rounds.

Importing this package needs only httpx, numpy and pydantic; `CoresetSampler` (torch) and
`grace_client.hf` (transformers) are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grace_client.cache import RoundCache
from grace_client.client import CoresetClient
from grace_client.dataset_info import DatasetInfo
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
from grace_client.ranks import LaunchError
from grace_client.reporter import ReporterStats, ScoreReporter

if TYPE_CHECKING:
    from grace_client.sampler import CoresetSampler

__all__ = [
    "ConflictError",
    "CoresetClient",
    "CoresetSampler",
    "DatasetInfo",
    "GraceAPIError",
    "GraceError",
    "IndexSlice",
    "IntegrityError",
    "LaunchError",
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


def __getattr__(name: str) -> Any:
    # torch is heavy and optional: only the sampler needs it, so it loads on first use.
    if name == "CoresetSampler":
        from grace_client.sampler import CoresetSampler

        return CoresetSampler
    raise AttributeError(f"module 'grace_client' has no attribute {name!r}")

"""The rounds of one job, and the one object that moves a round through its life.

A round is begun (computing), then published or failed. Publishing writes the manifest and the
arrays to the store in one transaction and only then makes the round visible, so a reader sees
the previous round until the swap and never half a round. A published round is one
`PublishedRound` value, held in one dictionary: its manifest, and the manifest's bytes exactly as
stored and served (byte-identical forever). Its arrays live in a small cache of `RoundData`
that refers to that same value, reloaded from the store when evicted.

Transitions (`begin`, `publish`, `fail`) are called under the job lock; reads never take it:
they read dictionary entries and immutable objects that are replaced whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_proto.models import RoundManifest, RoundStatus, SelectionConfigModel
from grace_selection.adapters.ports import ScoreStore
from grace_selection.adapters.store_records import StoredRound
from grace_selection.service.errors import RoundComputingError, UnknownRoundError
from grace_selection.service.rounds import RoundCache, RoundData


@dataclass(frozen=True, slots=True, eq=False)
class PublishedRound:
    """A published round: its manifest, and that manifest's bytes as stored and served."""

    manifest: RoundManifest
    raw: bytes

    @classmethod
    def of(cls, manifest: RoundManifest) -> PublishedRound:
        return cls(manifest, manifest.model_dump_json().encode())

    @classmethod
    def from_bytes(cls, raw: bytes) -> PublishedRound:
        return cls(RoundManifest.model_validate_json(raw), raw)

    @property
    def round(self) -> int:
        return self.manifest.round


class RoundLifecycle:
    """Published rounds (immutable), the round being computed, and the last failed one."""

    def __init__(self, job_id: str, incarnation: str = "", cache_capacity: int = 4) -> None:
        self.job_id = job_id
        self.incarnation = incarnation
        self._published: dict[int, PublishedRound] = {}
        self.computing: RoundManifest | None = None
        self.failed: RoundManifest | None = None
        self._cache = RoundCache(cache_capacity)

    # -- transitions (under the job lock) --------------------------------------------------

    def restore(self, raw_manifests: Mapping[int, bytes]) -> None:
        """The published rounds as the store holds them (at start-up)."""
        for r, raw in raw_manifests.items():
            self._published[r] = PublishedRound.from_bytes(raw)

    def begin(self, config: SelectionConfigModel, seed: int) -> RoundManifest:
        """Start the next round, or answer the one already computing."""
        if self.computing is None:
            self.computing = RoundManifest(
                job_id=self.job_id,
                job_incarnation=self.incarnation or None,
                round=self.next_round,
                status=RoundStatus.COMPUTING,
                config=config,
                seed=seed,
                created_at=get_utc_now(),
            )
        return self.computing

    def publish(
        self, store: ScoreStore, manifest: RoundManifest, arrays: dict[str, npt.NDArray[Any]]
    ) -> PublishedRound:
        """Write the round durably, then make it visible; the computing slot is freed."""
        published = PublishedRound.of(manifest)
        store.publish_round(self.job_id, StoredRound(published.round, published.raw, arrays))
        self._cache.put(published.round, RoundData(published, arrays, self.incarnation))
        self._published[published.round] = published
        self.computing = None
        self.failed = None
        return published

    def fail(self, error: str) -> RoundManifest:
        """The computing round failed; it is kept (status failed) until the next attempt."""
        if self.computing is None:
            raise RuntimeError("no round is computing")
        failed = self.computing.model_copy(update={"status": RoundStatus.FAILED, "error": error})
        self.failed = failed
        self.computing = None
        return failed

    # -- reads -----------------------------------------------------------------------------

    @property
    def latest(self) -> int | None:
        """The newest published round, None before the first."""
        return max(self._published) if self._published else None

    @property
    def next_round(self) -> int:
        latest = self.latest
        return 0 if latest is None else latest + 1

    def __len__(self) -> int:
        return len(self._published)

    def numbers(self) -> list[int]:
        """Published round numbers, oldest first."""
        return sorted(self._published)

    def listing(self) -> list[RoundManifest]:
        """Every published round's manifest, then the failed and the computing one."""
        manifests = [self._published[r].manifest for r in sorted(self._published)]
        return manifests + [m for m in (self.failed, self.computing) if m is not None]

    def resolve(self, r: str | int) -> int:
        """A round number from a path segment: an integer or `latest` (newest published)."""
        if r != "latest":
            return int(r)
        latest = self.latest
        if latest is not None:
            return latest
        if self.computing is not None:
            raise RoundComputingError(
                f"round {self.computing.round} is being computed", manifest=self.computing
            )
        raise UnknownRoundError(
            f"job {self.job_id!r} has no published round yet; POST "
            f"/v1/jobs/{self.job_id}/rounds to compute one",
            field="round",
        )

    def manifest(self, round_: int) -> RoundManifest:
        """A published, computing or failed round's manifest."""
        published = self._published.get(round_)
        if published is not None:
            return published.manifest
        for pending in (self.computing, self.failed):
            if pending is not None and pending.round == round_:
                return pending
        raise UnknownRoundError(
            f"round {round_} of job {self.job_id!r} does not exist; the newest published "
            f"round is {self.latest}",
            field="round",
        )

    def published(self, round_: int) -> PublishedRound:
        """A published round; 202-style error while it computes, 404-style once it failed."""
        published = self._published.get(round_)
        if published is not None:
            return published
        manifest = self.manifest(round_)
        if manifest.status == RoundStatus.COMPUTING:
            raise RoundComputingError(f"round {round_} is being computed", manifest=manifest)
        raise UnknownRoundError(
            f"round {round_} failed: {manifest.error}; POST .../rounds to try again",
            field="round",
        )

    def manifest_bytes(self, round_: int) -> bytes:
        """A round's manifest as served: the stored bytes once published."""
        published = self._published.get(round_)
        if published is not None:
            return published.raw
        return self.manifest(round_).model_dump_json().encode()

    def cached(self, round_: int) -> RoundData | None:
        """A published round's arrays if they are in memory (no I/O), else None."""
        self.published(round_)
        return self._cache.get(round_)

    def data(self, round_: int, store: ScoreStore) -> RoundData:
        """A published round's arrays, from the cache or the store."""
        published = self.published(round_)
        data = self._cache.get(round_)
        if data is None:
            stored = store.read_round(self.job_id, round_)
            if stored is None:
                raise UnknownRoundError(f"round {round_} is missing from the store", field="round")
            data = RoundData(published, dict(stored.arrays), self.incarnation)
            self._cache.put(round_, data)
        return data

    def latest_importance(self, store: ScoreStore, n: int) -> npt.NDArray[np.float32]:
        """The importance the newest round selected with (all NaN before the first round):
        the `previous_importance` of the next round."""
        latest = self.latest
        importance = None if latest is None else self.data(latest, store).importance
        if importance is None:
            return np.full(n, np.nan, dtype=np.float32)
        return importance


def get_utc_now() -> datetime:
    return datetime.now(UTC)

"""What the service tells the outside about itself (metrics, logs), as a small port."""

from __future__ import annotations

from typing import Protocol

from grace_proto.models import RoundManifest


class ServiceEvents(Protocol):
    def batch_ingested(
        self, kind: str, source: str | None, samples: int, nbytes: int, duplicate: bool
    ) -> None: ...

    def round_published(self, manifest: RoundManifest) -> None: ...

    def round_failed(self, manifest: RoundManifest) -> None: ...


class NoEvents:
    """Implements ServiceEvents by ignoring everything (tests, scripts)."""

    def batch_ingested(
        self, kind: str, source: str | None, samples: int, nbytes: int, duplicate: bool
    ) -> None:
        return None

    def round_published(self, manifest: RoundManifest) -> None:
        return None

    def round_failed(self, manifest: RoundManifest) -> None:
        return None

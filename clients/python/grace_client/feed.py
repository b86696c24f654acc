"""RoundFeed: keeps the next round's slice ready in the background, so training never waits.

A daemon thread polls the service for the newest published round and downloads this
rank's slice of it (to memory and the disk cache). The training thread only asks "what is
ready?", which never touches the network. When the service is unreachable the feed says
so loudly, once, keeps serving what it has, and picks fresh rounds up again when the
service returns.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from grace_client.client import CoresetClient
from grace_client.errors import GraceError, NotFoundError, RoundNotReadyError, ServiceUnavailable
from grace_client.payloads import IndexSlice
from grace_proto.models import RoundManifest, RoundStatus

log = logging.getLogger("grace_client")

WAIT_LOG_INTERVAL = 30.0  # seconds between "still waiting" lines while there is no round


class SliceSource(Protocol):
    """Where slices come from: the service (network) and a local cache (no network)."""

    def latest_published(self) -> int | None:
        """The newest published round, None if none yet; raises ServiceUnavailable when down."""

    def fetch_slice(self, round_: int, rank: int, world: int) -> IndexSlice:
        """Download (and cache) a slice; raises GraceError subclasses on failure."""

    def cached_slice(self, round_: int, rank: int, world: int) -> IndexSlice | None:
        """A slice from the local cache only, or None."""

    def latest_cached(self, rank: int, world: int) -> IndexSlice | None:
        """The newest slice in the local cache for (rank, world), or None."""

    def fetch_manifest(self, round_: int) -> RoundManifest:
        """A published round's manifest (from a local cache when there); raises GraceError."""


class ClientSliceSource:
    """SliceSource over a CoresetClient and its disk cache for one job."""

    def __init__(self, client: CoresetClient, job: str) -> None:
        self.client = client
        self.job = job

    @property
    def where(self) -> str:
        return self.client.base_url

    def latest_published(self) -> int | None:
        try:
            manifest = self.client.get_round(self.job, "latest")
        except NotFoundError:
            self.client.get_job(self.job)  # an unknown job is an error, not "no round yet"
            return None
        # "latest" may be a round still computing: walk back to the newest published one.
        round_ = manifest.round
        while manifest.status != RoundStatus.PUBLISHED:
            round_ -= 1
            if round_ < 0:
                return None
            manifest = self.client.get_round(self.job, round_)
        return round_

    def fetch_slice(self, round_: int, rank: int, world: int) -> IndexSlice:
        return self.client.get_indices(self.job, round_, rank, world)

    def cached_slice(self, round_: int, rank: int, world: int) -> IndexSlice | None:
        return self.client.cached_slice(self.job, round_, rank, world)

    def latest_cached(self, rank: int, world: int) -> IndexSlice | None:
        return self.client.latest_cached_slice(self.job, rank, world)

    def fetch_manifest(self, round_: int) -> RoundManifest:
        return self.client.get_round(self.job, round_)


class RoundFeed:
    """Ready slices of one (rank, world), fetched ahead by a background thread."""

    def __init__(
        self,
        source: SliceSource,
        *,
        rank: int,
        world: int,
        poll_interval: float = 5.0,
        name: str = "grace",
    ) -> None:
        self.source = source
        self.rank = rank
        self.world = world
        self.poll_interval = poll_interval
        self.name = name
        self._ready: dict[int, IndexSlice] = {}
        self._manifests: dict[int, RoundManifest] = {}
        self._wanted: set[int] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._reachable = True
        self._thread: threading.Thread | None = None

    # -- the training thread's side (no network) ---------------------------------------

    def newest_ready(self) -> int | None:
        with self._cond:
            return max(self._ready) if self._ready else None

    def ready(self, round_: int) -> IndexSlice | None:
        """The slice of `round_` if held in memory or on disk; never touches the network."""
        with self._cond:
            piece = self._ready.get(round_)
        if piece is None:
            piece = self.source.cached_slice(round_, self.rank, self.world)
            if piece is not None:
                self._keep(piece)
        return piece

    def want(self, round_: int) -> None:
        """Ask the background thread to fetch `round_` soon (another rank already has it)."""
        with self._cond:
            self._wanted.add(round_)
            self._cond.notify_all()

    def manifest(self, round_: int) -> RoundManifest | None:
        """Round `round_`'s manifest if the background thread has fetched it (no network)."""
        with self._cond:
            return self._manifests.get(round_)

    def forget_below(self, round_: int) -> None:
        with self._cond:
            for old in [r for r in self._ready if r < round_]:
                del self._ready[old]
            for old in [r for r in self._manifests if r < round_]:
                del self._manifests[old]

    @property
    def reachable(self) -> bool:
        return self._reachable

    # -- blocking calls, for startup and resume only -----------------------------------

    def initial_round(self, timeout: float) -> int:
        """The round to start on: the newest published one, or when the service cannot be
        reached, the newest cached one (said loudly); waits up to `timeout` if neither exists,
        saying so at once and every WAIT_LOG_INTERVAL seconds.
        """
        started = time.monotonic()
        deadline = started + timeout
        interval = 0.1
        next_note, noted = started, False
        while True:
            reason = "no round is published yet"
            try:
                latest = self.source.latest_published()
                self._set_reachable(True, None)
            except ServiceUnavailable as exc:
                cached = self.source.latest_cached(self.rank, self.world)
                if cached is not None:
                    self._set_reachable(False, cached.round, exc)
                    self._keep(cached)
                    return cached.round
                latest = None
                reason = f"the service cannot be reached ({exc}) and nothing is cached"
                self._set_reachable(False, None, exc)
            if latest is not None:
                if noted:
                    log.warning(
                        "GRACE %s: round %d is published; training starts after %.0fs of waiting",
                        self.name,
                        latest,
                        time.monotonic() - started,
                    )
                return latest
            now = time.monotonic()
            if now >= deadline:
                raise RoundNotReadyError(
                    f"{self.name}: no published round to train on after {timeout:.0f}s and "
                    "none in the local cache; publish round 0 (warm-up, then POST .../rounds) "
                    "or raise startup_timeout",
                    round_="latest",
                    retry_after=interval,
                )
            if now >= next_note:
                self._note_waiting(reason, now - started, timeout)
                next_note, noted = now + WAIT_LOG_INTERVAL, True
            time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
            interval = min(interval * 2, 5.0)

    def _note_waiting(self, reason: str, waited: float, timeout: float) -> None:
        # WARNING, not INFO: it must reach a user who configured no logging at all, since
        # the alternative is a trainer that sits silent for up to `timeout` seconds.
        log.warning(
            "GRACE %s: waiting for a round to train on: %s (%.0fs of up to %.0fs). Round 0 is "
            "published once the warm-up scores are in and POST /v1/jobs/%s/rounds asks for it "
            "(or the job's auto-trigger does); startup_timeout= sets how long to wait",
            self.name,
            reason,
            waited,
            timeout,
            self.name,
        )

    def obtain(self, round_: int, timeout: float) -> IndexSlice:
        """The slice of `round_` from memory, disk or the service, retrying up to `timeout`."""
        started = time.monotonic()
        deadline, next_note = started + timeout, started
        while True:
            piece = self.ready(round_)
            if piece is not None:
                return piece
            try:
                piece = self.source.fetch_slice(round_, self.rank, self.world)
            except ServiceUnavailable as exc:
                now = time.monotonic()
                if now >= deadline:
                    raise
                if now >= next_note:
                    log.warning(
                        "GRACE %s: waiting for round %d's slice, which is not cached here: the "
                        "service cannot be reached (%s); %.0fs of up to %.0fs",
                        self.name,
                        round_,
                        exc,
                        now - started,
                        timeout,
                    )
                    next_note = now + WAIT_LOG_INTERVAL
                time.sleep(min(1.0, max(deadline - now, 0.0)))
                continue
            self._keep(piece)
            return piece

    # -- the background thread ---------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(
                    target=self._run, name=f"grace-feed-{self.name}", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5.0)

    def poll_once(self) -> None:
        """One look at the service: fetch wanted rounds and the newest published one."""
        with self._cond:
            wanted = sorted(self._wanted)
        try:
            for round_ in wanted:
                self._fetch(round_)
            latest = self.source.latest_published()
            newest = self.newest_ready()
            if latest is not None and (newest is None or latest > newest):
                self._fetch(latest)
            self._fetch_manifests()
            self._set_reachable(True, self.newest_ready())
        except ServiceUnavailable as exc:
            self._set_reachable(False, self.newest_ready(), exc)
        except GraceError as exc:
            log.error("%s: could not prefetch the next round: %s", self.name, exc)

    def _run(self) -> None:
        while True:
            self.poll_once()
            with self._cond:
                if self._stop:
                    return
                # want() and close() wake this early; otherwise poll at the interval.
                self._cond.wait(self.poll_interval)
                if self._stop:
                    return

    def _fetch(self, round_: int) -> None:
        if self.ready(round_) is None:
            self._keep(self.source.fetch_slice(round_, self.rank, self.world))
        with self._cond:
            self._wanted.discard(round_)

    def _fetch_manifests(self) -> None:
        """Manifests of the rounds held, for what training reports (churn, rescored share)."""
        with self._cond:
            missing = [r for r in self._ready if r not in self._manifests]
        for round_ in missing:
            manifest = self.source.fetch_manifest(round_)
            with self._cond:
                self._manifests[round_] = manifest

    def _keep(self, piece: IndexSlice) -> None:
        with self._cond:
            self._ready[piece.round] = piece

    def _set_reachable(
        self, reachable: bool, training_round: int | None, exc: Exception | None = None
    ) -> None:
        if reachable == self._reachable:
            return
        self._reachable = reachable
        if reachable:
            log.warning(
                "GRACE %s: service reachable again; fresh rounds will be picked up", self.name
            )
        else:
            using = (
                f"training continues on cached round {training_round}"
                if training_round is not None
                else "no cached round yet"
            )
            log.warning(
                "GRACE %s: SERVICE UNREACHABLE (%s); %s until it returns", self.name, exc, using
            )

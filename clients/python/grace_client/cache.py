"""A disk cache of published round manifests and index slices, keyed by what the server vouches
for: the job's incarnation, and each round's sha256.

Published rounds never change (the service guarantees it), so what was fetched once can be
served from disk: after a restart, and when the service is down. But a job id is not a job: a
job deleted and created again under the same id, or a fresh service that reuses an id, has
rounds 0, 1, ... of its own. So everything is filed under the incarnation the service names
for the job (`JobResponse.incarnation`, `RoundManifest.job_incarnation`), and the client
checks a cached slice against the server's manifest whenever the server is reachable
(client.py). Layout:

    <root>/blobs/<sha[:2]>/<sha>                                  content-addressed bytes
    <root>/jobs/<job>/incarnation                                 the newest one the server named
    <root>/jobs/<job>/<incarnation>/manifests/<round>             sha of the manifest's JSON blob
    <root>/jobs/<job>/<incarnation>/slices/r<round>.k<rank>.w<world>   sha of the slice's frame

Entries of the layout before incarnations (`jobs/<job>/manifests`, `jobs/<job>/slices`) are
never read: nothing vouches for them.

A blob is verified against its name on every read; a corrupt or truncated one (a disk
error, a crash mid-write on a filesystem without atomic rename) is deleted and treated as
a miss, never returned. Writes are atomic (temp file, fsync, rename), so concurrent
writers (the sampler's prefetch thread, other ranks on the same host) cannot tear them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from grace_client.payloads import IndexSlice, decode_index_slice, encode_index_slice
from grace_proto.frames import FrameError, decode_frame, encode_frame
from grace_proto.models import RoundManifest, RoundStatus

log = logging.getLogger("grace_client")

_SLICE_NAME = re.compile(r"^r(\d+)\.k(\d+)\.w(\d+)$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_INCARNATION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def default_cache_dir() -> Path:
    """$GRACE_CACHE_DIR, else $XDG_CACHE_HOME/grace, else ~/.cache/grace."""
    explicit = os.environ.get("GRACE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "grace"


class RoundCache:
    """Manifests and index slices of published rounds, on disk under `root`, per incarnation."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- incarnations ------------------------------------------------------------------

    def remember_incarnation(self, job: str, incarnation: str) -> None:
        """Record the incarnation the server named for `job` (what offline reads fall back to)."""
        self._point(self._job_dir(job) / "incarnation", _checked(incarnation))

    def known_incarnation(self, job: str) -> str | None:
        """The newest incarnation the server named for `job`, or None."""
        try:
            text = (self._job_dir(job) / "incarnation").read_text().strip()
        except OSError:
            return None
        return text if _INCARNATION.match(text) else None

    # -- manifests ---------------------------------------------------------------------

    def put_manifest(self, manifest: RoundManifest, incarnation: str) -> None:
        """Remember a published manifest; anything else may still change and is not kept."""
        if manifest.status != RoundStatus.PUBLISHED:
            return
        if manifest.job_incarnation not in (None, incarnation):
            raise ValueError(
                f"manifest of incarnation {manifest.job_incarnation}, not {incarnation}"
            )
        sha = self._put_blob(manifest.model_dump_json().encode())
        folder = self._incarnation_dir(manifest.job_id, incarnation)
        self._point(folder / "manifests" / str(manifest.round), sha)

    def get_manifest(self, job: str, incarnation: str, round_: int) -> RoundManifest | None:
        pointer = self._incarnation_dir(job, incarnation) / "manifests" / str(round_)
        blob = self._read_pointed(pointer)
        if blob is None:
            return None
        try:
            return RoundManifest.model_validate_json(blob)
        except ValueError:
            log.warning("cached manifest %s is unreadable; dropping it", pointer)
            pointer.unlink(missing_ok=True)
            return None

    # -- index slices ------------------------------------------------------------------

    def put_slice(self, piece: IndexSlice, incarnation: str) -> None:
        if piece.job_incarnation not in (None, incarnation):
            raise ValueError(f"slice of incarnation {piece.job_incarnation}, not {incarnation}")
        meta, arrays = encode_index_slice(piece)
        sha = self._put_blob(encode_frame(meta, arrays))
        pointer = self._slice_pointer(
            piece.job_id, incarnation, piece.round, piece.rank, piece.world
        )
        self._point(pointer, sha)

    def get_slice(
        self, job: str, incarnation: str, round_: int, rank: int, world: int
    ) -> IndexSlice | None:
        pointer = self._slice_pointer(job, incarnation, round_, rank, world)
        blob = self._read_pointed(pointer)
        if blob is None:
            return None
        try:
            piece = decode_index_slice(decode_frame(blob))
        except (FrameError, ValueError, TypeError) as exc:
            log.warning("cached slice %s is unreadable (%s); dropping it", pointer, exc)
            pointer.unlink(missing_ok=True)
            return None
        same = (piece.job_id, piece.round, piece.rank, piece.world) == (job, round_, rank, world)
        if not same or piece.job_incarnation not in (None, incarnation):
            log.warning("cached slice %s holds another slice; dropping it", pointer)
            pointer.unlink(missing_ok=True)
            return None
        return piece

    def slice_rounds(self, job: str, incarnation: str, rank: int, world: int) -> list[int]:
        """Rounds with a cached slice for (rank, world), newest first (not yet verified)."""
        folder = self._incarnation_dir(job, incarnation) / "slices"
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            match = _SLICE_NAME.match(entry.name)
            if match and (int(match.group(2)), int(match.group(3))) == (rank, world):
                found.append(int(match.group(1)))
        return sorted(found, reverse=True)

    def latest_slice(self, job: str, incarnation: str, rank: int, world: int) -> IndexSlice | None:
        """The newest cached slice for (rank, world) that still verifies, or None."""
        for round_ in self.slice_rounds(job, incarnation, rank, world):
            piece = self.get_slice(job, incarnation, round_, rank, world)
            if piece is not None:
                return piece
        return None

    # -- storage -----------------------------------------------------------------------

    def _job_dir(self, job: str) -> Path:
        if "/" in job or job in ("", ".", ".."):
            raise ValueError(f"job id {job!r} cannot name a cache folder")
        return self.root / "jobs" / job

    def _incarnation_dir(self, job: str, incarnation: str) -> Path:
        return self._job_dir(job) / _checked(incarnation)

    def _slice_pointer(
        self, job: str, incarnation: str, round_: int, rank: int, world: int
    ) -> Path:
        return self._incarnation_dir(job, incarnation) / "slices" / f"r{round_}.k{rank}.w{world}"

    def _blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    def _put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha)
        if not path.exists():
            self._write_atomic(path, data)
        return sha

    def _point(self, pointer: Path, sha: str) -> None:
        """Make `pointer` name `sha`; a pointer that already does is left alone (no fsync:
        the prefetch thread re-caches the same manifest on every poll)."""
        try:
            if pointer.read_text().strip() == sha:
                return
        except OSError:
            pass
        self._write_atomic(pointer, sha)

    def _read_pointed(self, pointer: Path) -> bytes | None:
        """The verified blob a pointer names; a dangling or corrupt one is removed."""
        try:
            sha = pointer.read_text().strip()
        except OSError:
            return None
        if not _SHA.match(sha):
            log.warning("cache pointer %s is corrupt; dropping it", pointer)
            pointer.unlink(missing_ok=True)
            return None
        path = self._blob_path(sha)
        try:
            data = path.read_bytes()
        except OSError:
            pointer.unlink(missing_ok=True)
            return None
        if hashlib.sha256(data).hexdigest() != sha:
            log.warning("cached blob %s does not match its sha256; dropping it", path)
            path.unlink(missing_ok=True)
            pointer.unlink(missing_ok=True)
            return None
        return data

    @staticmethod
    def _write_atomic(path: Path, data: bytes | str) -> None:
        payload = data.encode() if isinstance(data, str) else data
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _checked(incarnation: str) -> str:
    if not _INCARNATION.match(incarnation):
        raise ValueError(f"incarnation {incarnation!r} cannot name a cache folder")
    return incarnation

"""An append-only log of framed, checksummed records in segment files: the local store's journal.

Record layout, little-endian:

    prefix   <I body length> <I crc32 of the header>
    header   <Q seq> <I payload length> <I payload crc32> <B kind length> <H batch id length>
             kind bytes, batch id bytes
    payload  raw bytes

Each append is written with one writev and fdatasync'ed before it returns, so an acknowledged
record is on disk. A `kill -9` (or power loss) during an append can leave only the *last* record
of the newest segment torn; opening the log detects that record (short, or a checksum that does
not match) and truncates it away; it was never acknowledged. A bad record anywhere else is
damage, not a crash, and raises StoreError.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from grace_selection.adapters.atomic_files import fsync_dir
from grace_selection.adapters.store_records import LogEntry, StoreError, compute_checksum

_PREFIX = struct.Struct("<II")
_HEADER = struct.Struct("<QIIBH")
_SUFFIX = ".log"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    seq: int
    kind: str
    batch_id: str
    payload_crc: int
    payload_offset: int
    payload_len: int


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    last_seq: int = 0  # 0 while empty


class SegmentLog:
    """The records of one job, in files named by their first seq. Not thread-safe: the owner
    (LocalScoreStore) serialises calls per job."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.last_seq = 0
        self._segments: list[_Segment] = []
        self._active: BinaryIO | None = None

    @classmethod
    def open(
        cls, folder: Path, on_record: Callable[[RecordHeader], None] | None = None
    ) -> SegmentLog:
        """Scan every segment's headers (payloads are read only for the newest record)."""
        folder.mkdir(parents=True, exist_ok=True)
        log_ = cls(folder)
        paths = sorted(p for p in folder.iterdir() if p.name.endswith(_SUFFIX))
        for i, path in enumerate(paths):
            segment = _Segment(int(path.name.removesuffix(_SUFFIX)), path)
            for header in _scan(path, is_newest=i == len(paths) - 1):
                segment.last_seq = header.seq
                if on_record is not None:
                    on_record(header)
            log_._segments.append(segment)
            log_.last_seq = max(log_.last_seq, segment.last_seq, segment.first_seq - 1)
        return log_

    def append(self, seq: int, kind: str, batch_id: str, payload: bytes | memoryview) -> int:
        """Write one record durably; returns the payload's crc32."""
        if seq <= self.last_seq:
            raise StoreError(f"log seq {seq} is not after the last one ({self.last_seq})")
        kind_b, bid_b = kind.encode(), batch_id.encode()
        crc = compute_checksum(payload)
        header = _HEADER.pack(seq, len(payload), crc, len(kind_b), len(bid_b)) + kind_b + bid_b
        prefix = _PREFIX.pack(len(header) + len(payload), compute_checksum(header))
        handle = self._writable(seq)
        fd = handle.fileno()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            _writev_all(fd, [prefix, header, payload])
            os.fdatasync(fd)
        except BaseException:
            # A failed write must not leave a half record behind a later good one.
            os.ftruncate(fd, start)
            raise
        self._segments[-1].last_seq = seq
        self.last_seq = seq
        return crc

    def read(self, after_seq: int = 0) -> Iterator[LogEntry]:
        """Entries with seq > after_seq, in order, each payload checked against its crc."""
        for i, segment in enumerate(list(self._segments)):
            nxt = self._segments[i + 1].first_seq if i + 1 < len(self._segments) else None
            if (nxt is not None and nxt - 1 <= after_seq) or not segment.path.exists():
                continue
            with segment.path.open("rb") as fh:
                for header in _scan_handle(fh, segment.path, is_newest=False):
                    if header.seq <= after_seq:
                        continue
                    fh.seek(header.payload_offset)
                    payload = fh.read(header.payload_len)
                    if compute_checksum(payload) != header.payload_crc:
                        raise StoreError(f"{segment.path}: record {header.seq} payload is damaged")
                    yield LogEntry(header.seq, header.kind, header.batch_id, payload)
                    fh.seek(header.payload_offset + header.payload_len)

    def roll(self) -> None:
        """Seal the active segment: the next append starts a new file."""
        self._close_active()
        if self._segments and self._segments[-1].last_seq == 0:
            return  # the active one is empty already
        self._segments.append(
            _Segment(self.last_seq + 1, self.folder / f"{self.last_seq + 1:020d}{_SUFFIX}")
        )

    def drop_through(self, seq: int) -> None:
        """Delete sealed segments whose records all have seq <= `seq`."""
        keep: list[_Segment] = []
        for i, segment in enumerate(self._segments):
            sealed = i + 1 < len(self._segments)
            nxt = self._segments[i + 1].first_seq if sealed else None
            if sealed and nxt is not None and nxt - 1 <= seq:
                segment.path.unlink(missing_ok=True)
            else:
                keep.append(segment)
        self._segments = keep
        fsync_dir(self.folder)

    def close(self) -> None:
        self._close_active()

    def _writable(self, seq: int) -> BinaryIO:
        if not self._segments:
            self._segments.append(_Segment(seq, self.folder / f"{seq:020d}{_SUFFIX}"))
        if self._active is None:
            path = self._segments[-1].path
            created = not path.exists()
            self._active = path.open("ab")
            if created:
                fsync_dir(self.folder)
        return self._active

    def _close_active(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _scan(path: Path, *, is_newest: bool) -> Iterator[RecordHeader]:
    with path.open("r+b" if is_newest else "rb") as fh:
        yield from _scan_handle(fh, path, is_newest=is_newest)


def _scan_handle(fh: BinaryIO, path: Path, *, is_newest: bool) -> Iterator[RecordHeader]:
    """Headers in file order; in the newest segment a torn tail is truncated away."""
    size = os.fstat(fh.fileno()).st_size
    offset = 0
    while offset < size:
        header = _read_header(fh, offset, size)
        end = header.payload_offset + header.payload_len if header else size + 1
        if header is not None and end == size and is_newest:
            fh.seek(header.payload_offset)
            if compute_checksum(fh.read(header.payload_len)) != header.payload_crc:
                header = None
        if header is None or end > size:
            if not is_newest:
                raise StoreError(f"{path}: damaged record at byte {offset}")
            log.warning("dropping a torn log tail of %d bytes in %s", size - offset, path)
            fh.truncate(offset)
            fh.flush()
            os.fsync(fh.fileno())
            return
        yield header
        offset = end


def _read_header(fh: BinaryIO, offset: int, size: int) -> RecordHeader | None:
    if offset + _PREFIX.size > size:
        return None
    fh.seek(offset)
    body_len, header_crc = _PREFIX.unpack(fh.read(_PREFIX.size))
    fixed = fh.read(_HEADER.size)
    if len(fixed) < _HEADER.size:
        return None
    seq, payload_len, payload_crc, kind_len, bid_len = _HEADER.unpack(fixed)
    names = fh.read(kind_len + bid_len)
    header_len = _HEADER.size + kind_len + bid_len
    if len(names) < kind_len + bid_len or compute_checksum(fixed + names) != header_crc:
        return None
    if body_len != header_len + payload_len:
        return None
    try:
        kind, batch_id = names[:kind_len].decode(), names[kind_len:].decode()
    except UnicodeDecodeError:
        return None
    payload_offset = offset + _PREFIX.size + header_len
    return RecordHeader(seq, kind, batch_id, payload_crc, payload_offset, payload_len)

"""The embedded ScoreStore: files in a data directory, so `grace serve` needs no server.

Layout under `root/jobs/<job>/`:

    spec.json                 the job spec (the folder appears atomically with it)
    docs/<name>               small documents (the checkpoint), replaced atomically
    log/<first seq>.log       the batch journal (see segment_log.py)
    snapshot/                 compacted state: meta.json, <array>.npy, batches.npy (the batch
                              ids it covers, batch_index.py; batches.json in older snapshots)
    rounds/<round>/           a published round: manifest.json and <array>.npy, one rename

Every write is fsynced before it returns. One process owns a data directory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.atomic_files import (
    clean_leftovers,
    create_dir_atomic,
    remove_tree,
    save_array,
    write_bytes_atomic,
    write_file_synced,
)
from grace_selection.adapters.batch_index import FILE_NAME as BATCHES_FILE
from grace_selection.adapters.batch_index import BatchIndex
from grace_selection.adapters.segment_log import RecordHeader, SegmentLog
from grace_selection.adapters.snapshot import read_snapshot_meta, write_snapshot
from grace_selection.adapters.store_records import (
    AppendResult,
    LogEntry,
    RoundExistsError,
    StateSnapshot,
    StoredRound,
    StoreError,
    format_batch_field,
    pack_array,
)

_ROUND_DIGITS = 8
_SNAPSHOT_KIND = "state"


@dataclass(slots=True)
class _JobFiles:
    """A job's open journal and the batch ids it has applied (field -> (crc, seq))."""

    log: SegmentLog
    batches: BatchIndex = field(default_factory=BatchIndex)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalScoreStore:
    """Implements ScoreStore with files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._jobs_dir = self.root / "jobs"
        self._jobs_dir.mkdir(parents=True, exist_ok=True)
        clean_leftovers(self._jobs_dir)
        self._open: dict[str, _JobFiles] = {}
        self._open_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def ping(self) -> None:
        if not self._jobs_dir.is_dir():
            raise StoreError(f"the data directory {self._jobs_dir} is gone")

    def close(self) -> None:
        with self._open_lock:
            for files in self._open.values():
                with files.lock:
                    files.log.close()
            self._open.clear()

    # -- jobs ------------------------------------------------------------------------------

    def create_job(self, job_id: str, spec: bytes) -> bool:
        return create_dir_atomic(
            self._job_dir(job_id), lambda folder: write_file_synced(folder / "spec.json", spec)
        )

    def read_jobs(self) -> dict[str, bytes]:
        jobs: dict[str, bytes] = {}
        for folder in sorted(self._jobs_dir.iterdir()):
            spec = folder / "spec.json"
            if not folder.name.startswith(".") and spec.is_file():
                jobs[folder.name] = spec.read_bytes()
        return jobs

    def delete_job(self, job_id: str) -> None:
        with self._open_lock:
            files = self._open.pop(job_id, None)
        if files is not None:
            with files.lock:
                files.log.close()
        remove_tree(self._job_dir(job_id))

    def put_document(self, job_id: str, name: str, data: bytes) -> None:
        write_bytes_atomic(self._existing(job_id) / "docs" / name, data)

    def get_document(self, job_id: str, name: str) -> bytes | None:
        path = self._job_dir(job_id) / "docs" / name
        return path.read_bytes() if path.is_file() else None

    # -- the batch log ---------------------------------------------------------------------

    def append_batch(self, job_id: str, kind: str, batch_id: str, payload: bytes) -> AppendResult:
        files = self._files(job_id)
        key = format_batch_field(kind, batch_id)
        with files.lock:
            known = files.batches.get(key)
            if known is not None:
                return AppendResult(seq=known[1], duplicate=True, checksum=known[0])
            seq = files.log.last_seq + 1
            crc = files.log.append(seq, kind, batch_id, payload)
            files.batches.add(key, crc, seq)
            return AppendResult(seq=seq, duplicate=False, checksum=crc)

    def read_log(self, job_id: str, after_seq: int = 0) -> Iterator[LogEntry]:
        files = self._files(job_id)
        yield from files.log.read(after_seq)

    # -- snapshots -------------------------------------------------------------------------

    def write_snapshot(self, job_id: str, snapshot: StateSnapshot) -> None:
        files = self._files(job_id)
        with files.lock:
            if snapshot.seq > files.log.last_seq:
                raise StoreError(
                    f"snapshot seq {snapshot.seq} is beyond the log ({files.log.last_seq})"
                )
            # New appends go to a fresh segment so that the covered ones can be deleted whole.
            files.log.roll()
            covered = files.batches.covered_through(snapshot.seq)
        arrays = {name: pack_array(name, value) for name, value in snapshot.arrays.items()}

        def write_files(folder: Path) -> None:
            for name, value in arrays.items():
                save_array(folder, name, value)
            save_array(folder, BATCHES_FILE.removesuffix(".npy"), covered)

        meta = {"kind": _SNAPSHOT_KIND, "seq": snapshot.seq, "arrays": sorted(arrays)}
        write_snapshot(self._existing(job_id) / "snapshot", meta, write_files)
        with files.lock:
            files.batches.compact(covered, snapshot.seq)
            files.log.drop_through(snapshot.seq)

    def read_snapshot(self, job_id: str) -> StateSnapshot | None:
        loaded = self._load_snapshot(self._job_dir(job_id))
        if loaded is None:
            return None
        meta, folder = loaded
        arrays = {name: np.load(folder / f"{name}.npy") for name in meta["arrays"]}
        return StateSnapshot(seq=int(meta["seq"]), arrays=arrays)

    # -- rounds ----------------------------------------------------------------------------

    def publish_round(self, job_id: str, stored: StoredRound) -> None:
        arrays = {name: pack_array(name, value) for name, value in stored.arrays.items()}

        def fill(folder: Path) -> None:
            for name, value in arrays.items():
                save_array(folder, name, value)
            write_file_synced(folder / "manifest.json", stored.manifest)

        target = self._existing(job_id) / "rounds" / f"{stored.round:0{_ROUND_DIGITS}d}"
        if not create_dir_atomic(target, fill):
            raise RoundExistsError(f"round {stored.round} of job {job_id!r} is already published")

    def read_round(self, job_id: str, round_: int) -> StoredRound | None:
        folder = self._round_dir(job_id, round_)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            return None
        arrays = {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}
        return StoredRound(round=round_, manifest=manifest.read_bytes(), arrays=arrays)

    def read_round_values(
        self, job_id: str, round_: int, name: str, ids: npt.NDArray[np.int64]
    ) -> npt.NDArray[Any] | None:
        path = self._round_dir(job_id, round_) / f"{name}.npy"
        if not path.is_file():
            return None
        values = np.load(path, mmap_mode="r")  # reads only the pages holding `ids`
        return np.array(values[np.asarray(ids, dtype=np.int64)])

    def read_manifests(self, job_id: str) -> dict[int, bytes]:
        rounds_dir = self._job_dir(job_id) / "rounds"
        if not rounds_dir.is_dir():
            return {}
        clean_leftovers(rounds_dir)
        manifests: dict[int, bytes] = {}
        for folder in sorted(rounds_dir.iterdir()):
            manifest = folder / "manifest.json"
            if folder.name.isdigit() and manifest.is_file():
                manifests[int(folder.name)] = manifest.read_bytes()
        return manifests

    # -- internals -------------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        return self._jobs_dir / job_id

    def _round_dir(self, job_id: str, round_: int) -> Path:
        return self._job_dir(job_id) / "rounds" / f"{round_:0{_ROUND_DIGITS}d}"

    def _existing(self, job_id: str) -> Path:
        folder = self._job_dir(job_id)
        if not (folder / "spec.json").is_file():
            raise StoreError(f"job {job_id!r} does not exist in {self._jobs_dir}")
        return folder

    def _files(self, job_id: str) -> _JobFiles:
        with self._open_lock:
            files = self._open.get(job_id)
            if files is None:
                files = self._open_files(self._existing(job_id))
                self._open[job_id] = files
            return files

    def _open_files(self, folder: Path) -> _JobFiles:
        batches = BatchIndex()
        snapshot_seq = 0
        loaded = self._load_snapshot(folder)
        if loaded is not None:
            meta, snap_folder = loaded
            snapshot_seq = int(meta["seq"])
            batches = BatchIndex.load(snap_folder)

        def remember(header: RecordHeader) -> None:
            key = format_batch_field(header.kind, header.batch_id)
            batches.add(key, header.payload_crc, header.seq)

        journal = SegmentLog.open(folder / "log", remember)
        # The seq counter never goes back, even when compaction deleted every segment.
        journal.last_seq = max(journal.last_seq, snapshot_seq)
        return _JobFiles(log=journal, batches=batches)

    @staticmethod
    def _load_snapshot(folder: Path) -> tuple[dict[str, Any], Path] | None:
        try:
            return read_snapshot_meta(folder / "snapshot", _SNAPSHOT_KIND)
        except FileNotFoundError:
            return None

"""The ports the service wires adapters into, named by role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.store_records import (
    AppendResult,
    LogEntry,
    StateSnapshot,
    StoredRound,
)
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph


class NeighborIndex(Protocol):
    """A cosine k-NN index over vectors keyed by sample id. One writer at a time."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def upsert(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add vectors, or replace the vectors of ids already present."""
        ...

    def query(
        self, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(ids, cosine similarities), each (n, k), nearest first; -1 / -inf pad missing."""
        ...

    def knn_graph(self, k: int, vectors: npt.NDArray[np.floating] | None = None) -> KnnGraph:
        """The k-NN graph of every stored point over ids 0..max_id (self dropped).

        vectors: the caller's copy of the stored unit vectors by id, if it has one; an index
        may query with it instead of reading its own back."""
        ...

    def save(self, path: Path) -> None: ...


class ScoreStore(Protocol):
    """Where a job's durable state lives: spec, an append-only batch log, compacted snapshots
    and published rounds. Implemented by LocalScoreStore (files) and RedisScoreStore.

    A write returns only once it is durable. Batch ids make appends idempotent; a published
    round is immutable. The service process is the only writer of a job.
    """

    def ping(self) -> None:
        """Return if the store answers; raise StoreError otherwise."""
        ...

    def close(self) -> None: ...

    def create_job(self, job_id: str, spec: bytes) -> bool:
        """Record a new job's spec; False (and no change) if the job exists."""
        ...

    def read_jobs(self) -> dict[str, bytes]:
        """Every job's spec by job id."""
        ...

    def delete_job(self, job_id: str) -> None:
        """Remove the job and everything stored for it; no error if it is absent."""
        ...

    def put_document(self, job_id: str, name: str, data: bytes) -> None:
        """Replace a small named document of the job (e.g. its checkpoint) atomically."""
        ...

    def get_document(self, job_id: str, name: str) -> bytes | None: ...

    def append_batch(self, job_id: str, kind: str, batch_id: str, payload: bytes) -> AppendResult:
        """Append a batch to the job's log unless (kind, batch_id) was applied before."""
        ...

    def read_log(self, job_id: str, after_seq: int = 0) -> Iterator[LogEntry]:
        """The entries with seq > after_seq, in order."""
        ...

    def write_snapshot(self, job_id: str, snapshot: StateSnapshot) -> None:
        """Store the compacted state; log entries it covers may then be dropped."""
        ...

    def read_snapshot(self, job_id: str) -> StateSnapshot | None: ...

    def publish_round(self, job_id: str, stored: StoredRound) -> None:
        """Publish manifest and arrays atomically; RoundExistsError if the round exists."""
        ...

    def read_round(self, job_id: str, round_: int) -> StoredRound | None: ...

    def read_round_values(
        self, job_id: str, round_: int, name: str, ids: npt.NDArray[np.int64]
    ) -> npt.NDArray[Any] | None:
        """Elements `ids` of a published 1-D round array, without reading all of it."""
        ...

    def read_manifests(self, job_id: str) -> dict[int, bytes]:
        """Every published round's manifest by round number."""
        ...


class ShardedIndex(Protocol):
    """A k-NN index split over shards that each hold a random part of the samples and select
    on their own (RandGreeDi's parts). The service drives it and stays the one writer of the
    job's state; shards hold only derived data and are rebuilt from the vectors after a loss."""

    @property
    def shards(self) -> int: ...

    def build(self, vectors: npt.NDArray[np.float32], seed: int) -> None:
        """Split samples 0..N-1 into random parts by `seed` and index each part's vectors."""
        ...

    def knn_graph(self, k: int) -> KnnGraph:
        """The global k-NN graph: every point queried on every shard, top k merged."""
        ...

    def select_parts(
        self,
        utility: npt.NDArray[np.float32],
        eligible: npt.NDArray[np.bool_],
        budget: int,
        k: int,
        config: SelectionConfig,
        seed: int,
    ) -> list[npt.NDArray[np.int64]]:
        """Each shard's greedy on its own k-NN graph (call after knn_graph): global ids."""
        ...

    def reports(self) -> list[dict[str, float]]:
        """Per shard: seconds per part of its work, resident and peak memory in MB."""
        ...

    def close(self) -> None: ...

"""A job's per-sample state in memory: the arrays that batches are applied to.

The same `apply` runs for a live batch and for one replayed from the log at start-up, so the
state after a restart is the state before it. Snapshots (compaction) are these arrays.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.core.scores import NEVER_SCORED, ScoreTable
from grace_selection.service.batches import Batch, EmbeddingBatch, ScoreBatch, StrataBatch

NO_EMBEDDING = 0  # embedding_seq of a sample never embedded (log seqs start at 1)


@dataclass(frozen=True, slots=True, eq=False)
class RoundInputs:
    """A consistent copy of what a round needs, taken under the job lock."""

    scores: ScoreTable
    fresh: npt.NDArray[np.bool_]  # (N,) scored for this round or later
    changed_ids: npt.NDArray[np.int64]  # samples embedded since the graph was last updated
    seq: int  # log position the copy reflects


class JobArrays:
    """loss, importance: (N,) float32, NaN where unknown. scored_round: (N,) int32, the round
    the importance was scored for (-1 never). embeddings: (N, dim) float32, allocated with the
    first embedding batch. embedding_seq: (N,) int64, the log seq of each sample's newest
    embedding (0 never). strata: (N,) int32 or None."""

    def __init__(self, n: int, dim: int, strata: npt.NDArray[np.int32] | None = None) -> None:
        self.n, self.dim = n, dim
        self.loss = np.full(n, np.nan, dtype=np.float32)
        self.importance = np.full(n, np.nan, dtype=np.float32)
        self.scored_round = np.full(n, NEVER_SCORED, dtype=np.int32)
        self.embedding_seq = np.zeros(n, dtype=np.int64)
        self.embeddings: npt.NDArray[np.float32] | None = None
        self.strata = strata
        self.applied_seq = 0
        self.log_bytes = 0  # payload bytes applied since the last snapshot
        self._scratch = np.zeros(n, dtype=np.int64)  # for duplicate checks; use under the lock

    @property
    def scratch(self) -> npt.NDArray[np.int64]:
        return self._scratch

    def reserve(self, batch: Batch) -> None:
        """Allocate what `apply(batch)` will write into (the embedding matrix, at the first
        embedding batch), so that applying cannot run out of memory; MemoryError here."""
        if isinstance(batch, EmbeddingBatch) and self.embeddings is None:
            self.embeddings = np.zeros((self.n, self.dim), dtype=np.float32)

    def apply(self, batch: Batch, seq: int) -> None:
        """Apply a checked batch recorded at log position `seq`; the last write wins."""
        if isinstance(batch, EmbeddingBatch):
            if self.embeddings is None:
                self.embeddings = np.zeros((self.n, self.dim), dtype=np.float32)
            self.embeddings[batch.ids] = batch.vectors
            self.embedding_seq[batch.ids] = seq
        elif isinstance(batch, ScoreBatch):
            if batch.loss is not None:
                self.loss[batch.ids] = batch.loss
            if batch.importance is not None:
                # A late score from an older round's model never replaces a newer one.
                newer = batch.round >= self.scored_round[batch.ids]
                ids = batch.ids[newer]
                self.importance[ids] = batch.importance[newer]
                self.scored_round[ids] = batch.round
        elif isinstance(batch, StrataBatch):
            self.strata = np.array(batch.strata, dtype=np.int32)
        self.applied_seq = max(self.applied_seq, seq)
        self.log_bytes += len(batch.payload)

    def counts(self) -> tuple[int, int]:
        """(embedded samples, samples with a known importance or loss)."""
        scored = np.isfinite(self.importance) | np.isfinite(self.loss)
        return int(np.count_nonzero(self.embedding_seq)), int(np.count_nonzero(scored))

    def round_inputs(self, round_: int, graph_seq: int) -> RoundInputs:
        """Copies for round `round_`; embeddings newer than `graph_seq` count as changed (their
        vectors are read later, by `rows`: a round that rebuilds never needs them)."""
        changed = np.flatnonzero(self.embedding_seq > graph_seq).astype(np.int64)
        scores = ScoreTable.from_arrays(
            self.loss.copy(),
            self.importance.copy(),
            self.scored_round.copy(),
            None if self.strata is None else self.strata.copy(),
        )
        return RoundInputs(
            scores=scores,
            fresh=scores.scored_round >= round_,
            changed_ids=changed,
            seq=self.applied_seq,
        )

    def embedded_rows(self, lock: AbstractContextManager[Any]) -> EmbeddedRows:
        """Every embedded sample, read a block at a time under `lock` (a full copy would be a
        second 1.5 GB at 1M x 384, held through a whole graph build)."""
        with lock:
            ids = np.flatnonzero(self.embedding_seq).astype(np.int64)
            return EmbeddedRows(self, ids, self.applied_seq, lock)

    def rows(
        self, ids: npt.NDArray[np.int64], seq: int, lock: AbstractContextManager[Any]
    ) -> EmbeddedRows:
        """The embeddings of `ids`, as of log position `seq` or newer, read under `lock`."""
        return EmbeddedRows(self, ids, seq, lock)

    def embedded(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
        """(ids, copies of their embeddings, the log seq they reflect) of every embedded sample."""
        ids = np.flatnonzero(self.embedding_seq).astype(np.int64)
        if self.embeddings is None:
            return ids, np.zeros((0, self.dim), dtype=np.float32), self.applied_seq
        return ids, self.embeddings[ids], self.applied_seq

    def snapshot_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Copies of every array, for compaction off the lock."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "loss": self.loss.copy(),
            "importance": self.importance.copy(),
            "scored_round": self.scored_round.copy(),
            "embedding_seq": self.embedding_seq.copy(),
        }
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings.copy()
        if self.strata is not None:
            arrays["strata"] = self.strata.copy()
        return arrays

    def load_snapshot(self, seq: int, arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Restore from a snapshot: the reverse of snapshot_arrays."""
        self.loss = np.array(arrays["loss"], dtype=np.float32)
        self.importance = np.array(arrays["importance"], dtype=np.float32)
        self.scored_round = np.array(arrays["scored_round"], dtype=np.int32)
        self.embedding_seq = np.array(arrays["embedding_seq"], dtype=np.int64)
        if "embeddings" in arrays:
            self.embeddings = np.array(arrays["embeddings"], dtype=np.float32)
        if "strata" in arrays:
            self.strata = np.array(arrays["strata"], dtype=np.int32)
        self.applied_seq = seq
        self.log_bytes = 0

    def state_bytes(self) -> int:
        """Roughly what a snapshot of this state costs to write."""
        embedded = self.embeddings.nbytes if self.embeddings is not None else 0
        return embedded + self.n * 24


class EmbeddedRows:
    """The embeddings of `ids`, copied block by block under the job lock as a build reads them.

    seq is the log position when the ids were taken: a row re-embedded while the build reads
    has a newer embedding_seq, so the next round takes it in again (unchanged, if the build
    already read the new one), and no row is left behind.
    """

    def __init__(
        self,
        arrays: JobArrays,
        ids: npt.NDArray[np.int64],
        seq: int,
        lock: AbstractContextManager[Any],
    ) -> None:
        self.ids, self.seq = ids, seq
        self._arrays, self._lock = arrays, lock
        self.shape = (ids.size, arrays.dim)

    def __getitem__(self, rows: slice) -> npt.NDArray[np.float32]:
        with self._lock:
            embeddings = self._arrays.embeddings
            if embeddings is None:
                return np.zeros((len(self.ids[rows]), self._arrays.dim), dtype=np.float32)
            return embeddings[self.ids[rows]]

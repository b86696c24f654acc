"""A job's per-sample state in memory: the arrays that batches are applied to.

The same `apply` runs for a live batch and for one replayed from the log at start-up, so the
state after a restart is the state before it. Snapshots (compaction) are these arrays.

One copy of the vectors: when the job's graph keeper is the one-process GraphKeeper, the
first round's build takes `embeddings` over as the graph's unit vectors (normalised in place)
and the keeper reads and writes it from then on. The job is "held" from that moment: a new
embedding waits in `pending` (service.pending_rows) until the next round takes it, measures
its drift against the held row and writes it in. Before, the job kept the raw rows (1x) and
the keeper its own unit vectors (1x more).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.vectors import normalize_rows
from grace_selection.core.scores import NEVER_SCORED, ScoreTable
from grace_selection.service.batches import Batch, EmbeddingBatch, ScoreBatch, StrataBatch
from grace_selection.service.pending_rows import PendingRows, TakenRows

NO_EMBEDDING = 0  # embedding_seq of a sample never embedded (log seqs start at 1)
_COPY_BLOCK = 65536  # rows copied at a time from a saved graph's (memory-mapped) vectors


@dataclass(frozen=True, slots=True, eq=False)
class RoundInputs:
    """A consistent copy of what a round needs, taken under the job lock."""

    scores: ScoreTable
    fresh: npt.NDArray[np.bool_]  # (N,) scored for this round or later
    changed_ids: npt.NDArray[np.int64]  # samples embedded since the graph was last updated
    seq: int  # log position the copy reflects


class JobArrays:
    """loss, importance: (N,) float32, NaN where unknown. scored_round: (N,) int32, the round
    the importance was scored for (-1 never). embeddings: (N, dim) float32 (or float16: see
    matrix_dtype), allocated with the first embedding batch. embedding_seq: (N,) int64, the
    log seq of each sample's newest embedding (0 never). strata: (N,) int32 or None.

    shared: the graph keeper may take `embeddings` over (see the module's doc); matrix_dtype
    is then its vectors' dtype (float16 stores unit rows: a raw row could overflow it).
    """

    def __init__(
        self,
        n: int,
        dim: int,
        strata: npt.NDArray[np.int32] | None = None,
        *,
        shared: bool = False,
        matrix_dtype: str = "float32",
    ) -> None:
        self.n, self.dim = n, dim
        self.shared = shared
        self.matrix_dtype = np.dtype(matrix_dtype)
        # Held: `embeddings` is the graph's (unit vectors, in its frame), and new embeddings
        # wait in `pending`; held_seq is the log seq the held rows reflect.
        self.held = False
        self.held_seq = 0
        self.pending = PendingRows(n, dim)
        self.in_matrix = np.zeros(n, dtype=np.bool_)  # `embeddings` has a row for the sample
        self.loss = np.full(n, np.nan, dtype=np.float32)
        self.importance = np.full(n, np.nan, dtype=np.float32)
        self.scored_round = np.full(n, NEVER_SCORED, dtype=np.int32)
        self.embedding_seq = np.zeros(n, dtype=np.int64)
        self.embeddings: npt.NDArray[np.floating] | None = None
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
        if isinstance(batch, EmbeddingBatch):
            self._matrix()  # before the batch is journalled: MemoryError here
            if self.held:
                self.pending.reserve(batch.ids)

    def apply(self, batch: Batch, seq: int) -> None:
        """Apply a checked batch recorded at log position `seq`; the last write wins."""
        if isinstance(batch, EmbeddingBatch):
            self.reserve(batch)
            if self.held:
                self.pending.put(batch.ids, batch.vectors)
            else:
                assert self.embeddings is not None  # reserved above
                self.embeddings[batch.ids] = self._stored(batch.vectors)
                self.in_matrix[batch.ids] = True
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
            if self.held:  # the rows the matrix holds; newer ones wait in `pending`
                ids = np.flatnonzero(self.in_matrix).astype(np.int64)
                return EmbeddedRows(self, ids, self.held_seq, lock)
            ids = np.flatnonzero(self.embedding_seq).astype(np.int64)
            return EmbeddedRows(self, ids, self.applied_seq, lock)

    def take_round_rows(self) -> TakenRows | None:
        """What a round's graph update takes in (call under the job lock); None unless shared.

        The first time, the job becomes held: nothing waits yet, and the build normalises
        the matrix's rows in place. After that, every waiting row, which the keeper then
        writes into the matrix (`in_matrix` says so from now)."""
        if not self.shared:
            return None
        self._matrix()  # a job whose first batch was scores only has none yet
        taken = self.pending.take()
        self.in_matrix[taken.ids] = True
        self.held, self.held_seq = True, self.applied_seq
        return taken

    def return_round_rows(self, taken: TakenRows) -> None:
        """A round that failed gives its rows back (call under the job lock); a sample
        embedded again meanwhile keeps its newer row."""
        waiting, _ = self.pending.rows_of(taken.ids)
        self.pending.put(taken.ids[~waiting], taken.rows[~waiting])

    def adopt_graph(
        self,
        seq: int,
        in_index: npt.NDArray[np.bool_],
        vectors: npt.NDArray[np.floating],
    ) -> npt.NDArray[np.floating] | None:
        """Take a saved graph's vectors (as of log seq `seq`) as the matrix, at start-up after
        the replay; returns the matrix, or None when the matrix holds newer rows than the
        graph (the graph is then rebuilt from it).

        Rows embedded after `seq` wait in `pending` (a replayed raw row is moved there), and a
        waiting row the graph already took in is dropped."""
        if not self.shared or (self.held and self.held_seq > seq):
            return None
        matrix = self._matrix()
        newer = np.flatnonzero(self.embedding_seq > seq).astype(np.int64)
        if not self.held:
            raw = newer[self.in_matrix[newer]]
            self.pending.put(raw, matrix[raw].astype(np.float32))
        self.pending.drop(np.flatnonzero(self.embedding_seq <= seq).astype(np.int64))
        rows = np.flatnonzero(in_index).astype(np.int64)
        for start in range(0, rows.size, _COPY_BLOCK):
            block = rows[start : start + _COPY_BLOCK]
            matrix[block] = vectors[block]
        self.in_matrix[:] = in_index
        self.held, self.held_seq = True, seq
        return matrix

    def newest_rows(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Copies of the newest embedding of each of `ids` (a held row is the graph's unit
        vector; a waiting one is as it was sent)."""
        if self.embeddings is None:
            return np.zeros((ids.size, self.dim), dtype=np.float32)
        rows = self.embeddings[ids].astype(np.float32)
        waiting, pending = self.pending.rows_of(ids)
        rows[waiting] = pending
        return rows

    def rows(
        self, ids: npt.NDArray[np.int64], seq: int, lock: AbstractContextManager[Any]
    ) -> EmbeddedRows:
        """The embeddings of `ids`, as of log position `seq` or newer, read under `lock`."""
        return EmbeddedRows(self, ids, seq, lock)

    def embedded(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
        """(ids, copies of their embeddings, the log seq they reflect) of every embedded sample."""
        ids = np.flatnonzero(self.embedding_seq).astype(np.int64)
        return ids, self.newest_rows(ids), self.applied_seq

    def snapshot_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Every array, for compaction off the lock: copies, but for a held matrix."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "loss": self.loss.copy(),
            "importance": self.importance.copy(),
            "scored_round": self.scored_round.copy(),
            "embedding_seq": self.embedding_seq.copy(),
        }
        if self.embeddings is not None:
            # Held, only the round thread writes the matrix, and compaction runs on it: the
            # matrix is written as it is, not copied (1x the raw vectors, held for the write).
            arrays["embeddings"] = self.embeddings if self.held else self.embeddings.copy()
        if self.strata is not None:
            arrays["strata"] = self.strata.copy()
        if self.held:
            arrays["held_seq"] = np.array([self.held_seq], dtype=np.int64)
            arrays["in_matrix"] = self.in_matrix.copy()
            taken = self.pending
            arrays["pending_ids"] = taken.ids.copy()
            arrays["pending_rows"] = taken.rows_of(taken.ids)[1]
        return arrays

    def load_snapshot(self, seq: int, arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Restore from a snapshot: the reverse of snapshot_arrays."""
        self.loss = np.array(arrays["loss"], dtype=np.float32)
        self.importance = np.array(arrays["importance"], dtype=np.float32)
        self.scored_round = np.array(arrays["scored_round"], dtype=np.int32)
        self.embedding_seq = np.array(arrays["embedding_seq"], dtype=np.int64)
        if "embeddings" in arrays:
            # The store's array becomes the matrix when it can (at start-up a copy was a second
            # 1x of the raw vectors).
            stored = np.asarray(arrays["embeddings"], dtype=self.matrix_dtype)
            writable = stored.flags.writeable and stored.flags.c_contiguous
            self.embeddings = stored if writable else np.array(stored)
        if "strata" in arrays:
            self.strata = np.array(arrays["strata"], dtype=np.int32)
        self.pending.clear()
        if "held_seq" in arrays and self.shared:
            self.held, self.held_seq = True, int(arrays["held_seq"][0])
            self.in_matrix = np.array(arrays["in_matrix"], dtype=np.bool_)
            self.pending.put(
                np.asarray(arrays["pending_ids"], np.int64),
                np.asarray(arrays["pending_rows"], np.float32),
            )
        elif "held_seq" in arrays:
            # Saved held, loaded by a keeper that does not share (sharded): the newest row of
            # every sample goes back into the matrix.
            self.held = False
            pending_ids = np.asarray(arrays["pending_ids"], np.int64)
            if self.embeddings is not None and pending_ids.size:
                self.embeddings[pending_ids] = self._stored(arrays["pending_rows"])
            self.in_matrix = self.embedding_seq > 0
        else:
            self.held = False
            self.in_matrix = self.embedding_seq > 0
        self.applied_seq = seq
        self.log_bytes = 0

    def state_bytes(self) -> int:
        """Roughly what a snapshot of this state costs to write."""
        embedded = self.embeddings.nbytes if self.embeddings is not None else 0
        return int(embedded + self.pending.nbytes + self.n * 24)

    def _matrix(self) -> npt.NDArray[np.floating]:
        """The embedding matrix, allocated at first use."""
        if self.embeddings is None:
            self.embeddings = np.zeros((self.n, self.dim), dtype=self.matrix_dtype)
        return self.embeddings

    def _stored(self, rows: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        """Rows as the matrix stores them: float16 holds unit rows (a raw one may overflow)."""
        if self.matrix_dtype == np.float16:
            return normalize_rows(np.asarray(rows, np.float32)).astype(np.float16)
        return rows


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
            return embeddings[self.ids[rows]].astype(np.float32, copy=False)

"""Embeddings that arrived after the graph took the job's rows in, waiting for the next round.

Once a graph holds a job's embedding matrix as its unit vectors (service.state.JobArrays), a
new embedding cannot overwrite its row: the graph measures how far the sample moved against
the old vector, and the joins of a round in progress read it. It waits here instead, one row
per sample (a later embedding of the same sample replaces it), until a round takes every
waiting row at once. At rho 0.3 that is 0.3x the raw vectors between rounds, where a second
copy of the matrix held by the graph was 1x all the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_EMPTY_SLOT = -1
# Room grows by this factor (and at least this many rows): at most 25% unused, and an ingest
# of m rows copies the buffer ~5 times in all, amortised.
_GROWTH = 1.25
_MIN_ROWS = 4096


@dataclass(frozen=True, slots=True, eq=False)
class TakenRows:
    """Every waiting row at the moment a round took them: ids sorted, rows[i] is ids[i]'s
    newest embedding (float32, owned by the taker: it may normalise them in place)."""

    ids: npt.NDArray[np.int64]
    rows: npt.NDArray[np.float32]


class PendingRows:
    """(m, dim) rows of m distinct samples, in the order they first arrived."""

    def __init__(self, n: int, dim: int) -> None:
        self.n, self.dim = n, dim
        self._slot = np.full(n, _EMPTY_SLOT, dtype=np.int32)  # sample -> row, or -1
        self._ids = np.zeros(0, dtype=np.int64)
        self._rows = np.zeros((0, dim), dtype=np.float32)
        self.count = 0

    @property
    def ids(self) -> npt.NDArray[np.int64]:
        return self._ids[: self.count]

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes + self._ids.nbytes)

    def reserve(self, ids: npt.NDArray[np.int64]) -> None:
        """Make room for `ids` (distinct) now, so that `put` cannot run out of memory."""
        needed = self.count + int(np.count_nonzero(self._slot[ids] == _EMPTY_SLOT))
        if needed <= self._rows.shape[0]:
            return
        capacity = max(needed, int(self._rows.shape[0] * _GROWTH), _MIN_ROWS)
        rows = np.empty((capacity, self.dim), dtype=np.float32)
        ids_room = np.empty(capacity, dtype=np.int64)
        rows[: self.count] = self._rows[: self.count]
        ids_room[: self.count] = self._ids[: self.count]
        self._rows, self._ids = rows, ids_room

    def put(self, ids: npt.NDArray[np.int64], rows: npt.NDArray[np.floating]) -> None:
        """Set the waiting row of each of `ids` (distinct); a sample already waiting has its
        row replaced."""
        self.reserve(ids)
        slots = self._slot[ids].astype(np.int64)
        fresh = slots == _EMPTY_SLOT
        added = int(np.count_nonzero(fresh))
        slots[fresh] = np.arange(self.count, self.count + added)
        self._slot[ids[fresh]] = slots[fresh]
        self._ids[slots[fresh]] = ids[fresh]
        self._rows[slots] = rows
        self.count += added

    def rows_of(
        self, ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
        """Which of `ids` wait here, and copies of their rows."""
        slots = self._slot[ids]
        waiting = slots != _EMPTY_SLOT
        return waiting, self._rows[slots[waiting]]

    def take(self) -> TakenRows:
        """Every waiting row, sorted by id; none wait afterwards."""
        order = np.argsort(self._ids[: self.count], kind="stable")
        taken = TakenRows(self._ids[order], self._rows[order])
        self.clear()
        return taken

    def drop(self, ids: npt.NDArray[np.int64]) -> None:
        """Forget the waiting rows of `ids` (those not waiting are ignored)."""
        slots = self._slot[ids]
        gone = np.zeros(self.count, dtype=np.bool_)
        gone[slots[slots != _EMPTY_SLOT]] = True
        if not gone.any():
            return
        keep = np.flatnonzero(~gone)
        kept_ids, kept_rows = self._ids[keep], self._rows[keep]
        self.clear()
        self.put(kept_ids, kept_rows)

    def clear(self) -> None:
        self._slot[self._ids[: self.count]] = _EMPTY_SLOT
        self._ids = np.zeros(0, dtype=np.int64)
        self._rows = np.zeros((0, self.dim), dtype=np.float32)
        self.count = 0

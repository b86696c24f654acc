"""A growable, L2-normalised float32 matrix keyed by dense sample id: both indexes keep one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt


def normalize_rows(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows scaled to unit length; zero rows stay zero (their similarity to anything is 0)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = np.divide(
        vectors, norms, out=np.zeros_like(vectors, dtype=np.float32), where=norms > 0
    ).astype(np.float32, copy=False)
    return out


class VectorTable:
    """Unit vectors by id in one contiguous array that grows geometrically."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self._data = np.zeros((max(capacity, 1), dim), dtype=np.float32)
        self._present = np.zeros(max(capacity, 1), dtype=bool)

    @property
    def id_bound(self) -> int:
        """One past the largest id ever stored (0 when empty)."""
        present = np.flatnonzero(self._present)
        return int(present[-1]) + 1 if present.size else 0

    @property
    def present(self) -> npt.NDArray[np.bool_]:
        mask: npt.NDArray[np.bool_] = self._present[: self.id_bound]
        return mask

    @property
    def data(self) -> npt.NDArray[np.float32]:
        """(id_bound, dim) view; rows of absent ids are zero."""
        view: npt.NDArray[np.float32] = self._data[: self.id_bound]
        return view

    def __len__(self) -> int:
        return int(self._present.sum())

    def check(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
        if vectors.shape != (ids.shape[0], self.dim):
            raise ValueError(
                f"vectors must have shape ({ids.shape[0]}, {self.dim}), got {vectors.shape}"
            )
        if ids.size and ids.min() < 0:
            raise ValueError("ids must be >= 0")
        if ids.size != np.unique(ids).size:
            raise ValueError("ids must be unique within one call")

    def put(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self.check(ids, vectors)
        if not ids.size:
            return
        needed = int(ids.max()) + 1
        if needed > self._data.shape[0]:
            capacity = max(needed, 2 * self._data.shape[0])
            grown = np.zeros((capacity, self.dim), dtype=np.float32)
            grown[: self._data.shape[0]] = self._data
            present = np.zeros(capacity, dtype=bool)
            present[: self._present.shape[0]] = self._present
            self._data, self._present = grown, present
        self._data[ids] = normalize_rows(np.asarray(vectors, dtype=np.float32))
        self._present[ids] = True

    def get(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        rows: npt.NDArray[np.float32] = self._data[ids]
        return rows

    def save(self, folder: Path) -> None:
        """vectors.npy and present.npy in folder (the caller makes the folder swap atomic)."""
        with (folder / "vectors.npy").open("wb") as fh:
            np.save(fh, self.data)
        with (folder / "present.npy").open("wb") as fh:
            np.save(fh, self.present)

    @classmethod
    def load(cls, folder: Path, dim: int) -> VectorTable:
        data = np.load(folder / "vectors.npy")
        present = np.load(folder / "present.npy")
        if data.ndim != 2 or data.shape[1] != dim or present.shape != (data.shape[0],):
            raise ValueError(f"snapshot in {folder} does not hold {dim}-dim vectors")
        table = cls(dim, max(data.shape[0], 1))
        table._data[: data.shape[0]] = data
        table._present[: data.shape[0]] = present
        return table

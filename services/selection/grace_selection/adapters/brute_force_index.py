"""Exact cosine k-NN by blocked matrix products: for small N and as the oracle for HNSW."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.knn import graph_from_neighbors, top_k_rows
from grace_selection.adapters.snapshot import read_snapshot_meta, write_snapshot
from grace_selection.adapters.vectors import VectorTable, normalize_rows
from grace_selection.core.graph import KnnGraph

_BLOCK = 2048


class BruteForceIndex:
    """Implements NeighborIndex exactly; O(N^2 d) for the full graph, fine up to ~50k points."""

    def __init__(self, dim: int) -> None:
        self._vectors = VectorTable(dim)
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._vectors.dim

    def __len__(self) -> int:
        return len(self._vectors)

    def upsert(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        with self._lock:
            self._vectors.put(np.asarray(ids, dtype=np.int64), vectors)

    def query(
        self, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        with self._lock:
            return self._query(normalize_rows(np.asarray(vectors, dtype=np.float32)), k, None)

    def knn_graph(self, k: int, vectors: npt.NDArray[np.floating] | None = None) -> KnnGraph:
        """`vectors` is ignored: this index searches its own exact copy."""
        with self._lock:
            table = self._vectors
            ids, sims = self._query(table.data, k + 1, exclude_self=True)
        return graph_from_neighbors(ids, sims, table.present, k)

    def _query(
        self, unit: npt.NDArray[np.float32], k: int, exclude_self: bool | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        data, present = self._vectors.data, self._vectors.present
        out_ids = np.full((unit.shape[0], k), -1, dtype=np.int64)
        out_sims = np.full((unit.shape[0], k), -np.inf, dtype=np.float32)
        if not present.any():
            return out_ids, out_sims
        for start in range(0, unit.shape[0], _BLOCK):
            block = unit[start : start + _BLOCK]
            sims = block @ data.T  # (B, N)
            sims[:, ~present] = -np.inf
            if exclude_self:
                rows = np.arange(block.shape[0])
                sims[rows, start + rows] = -np.inf
            out_ids[start : start + block.shape[0]], out_sims[start : start + block.shape[0]] = (
                top_k_rows(sims, k)
            )
        return out_ids, out_sims

    def save(self, path: Path) -> None:
        with self._lock:
            write_snapshot(path, {"kind": "brute", "dim": self.dim}, self._vectors.save)

    @classmethod
    def load(cls, path: Path) -> BruteForceIndex:
        meta, path = read_snapshot_meta(path, "brute")
        index = cls(int(meta["dim"]))
        index._vectors = VectorTable.load(path, index.dim)
        return index

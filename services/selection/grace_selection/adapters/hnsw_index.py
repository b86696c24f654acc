"""Approximate cosine k-NN with hnswlib; the service's default NeighborIndex."""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.knn import graph_from_neighbors
from grace_selection.adapters.snapshot import read_snapshot_meta, write_snapshot
from grace_selection.adapters.vectors import VectorTable, normalize_rows
from grace_selection.core.graph import KnnGraph

_INDEX_FILE = "hnsw.bin"


@dataclass(frozen=True, slots=True)
class HnswParams:
    """M and ef_construction trade build time for recall; ef_search is raised to >= 2(k+1)."""

    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    num_threads: int = 0  # 0: all cores
    seed: int = 100


class HnswNeighborIndex:
    """Implements NeighborIndex over hnswlib's HNSW graph.

    hnswlib's add and query calls are not safe against each other, so one lock serialises
    writers and readers; the service additionally builds graphs off the event loop.
    It keeps its own unit-vector copy so that the full k-NN graph is one batched query.
    """

    def __init__(self, dim: int, params: HnswParams | None = None, capacity: int = 1024) -> None:
        self.params = params or HnswParams()
        self._vectors = VectorTable(dim, capacity)
        self._lock = threading.Lock()
        self._index = self._new_index(dim, capacity)

    def _new_index(self, dim: int, capacity: int) -> Any:
        import hnswlib  # imported here: nothing heavy at import time of the service

        index = hnswlib.Index(space="cosine", dim=dim)
        index.init_index(
            max_elements=max(capacity, 16),
            ef_construction=self.params.ef_construction,
            M=self.params.m,
            random_seed=self.params.seed,
        )
        index.set_num_threads(self.params.num_threads or os.cpu_count() or 1)
        return index

    @property
    def dim(self) -> int:
        return self._vectors.dim

    def __len__(self) -> int:
        return len(self._vectors)

    def upsert(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        self._vectors.check(ids, vectors)
        if not ids.size:
            return
        with self._lock:
            needed = len(self._vectors) + ids.size
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            self._vectors.put(ids, vectors)
            self._index.add_items(self._vectors.get(ids), ids.astype(np.uint64))

    def query(
        self, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        unit = normalize_rows(np.asarray(vectors, dtype=np.float32))
        with self._lock:
            return self._query(unit, k)

    def _query(
        self, unit: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        ids = np.full((unit.shape[0], k), -1, dtype=np.int64)
        sims = np.full((unit.shape[0], k), -np.inf, dtype=np.float32)
        take = min(k, len(self._vectors))
        if take == 0 or unit.shape[0] == 0:
            return ids, sims
        self._index.set_ef(max(self.params.ef_search, 2 * take))
        labels, distances = self._index.knn_query(unit, k=take)
        ids[:, :take] = labels.astype(np.int64)
        sims[:, :take] = 1.0 - distances
        return ids, sims

    def knn_graph(self, k: int) -> KnnGraph:
        with self._lock:
            present = self._vectors.present.copy()
            ids, sims = self._query(self._vectors.data, k + 1)
        return graph_from_neighbors(ids, sims, present, k)

    def save(self, path: Path) -> None:
        """Write the snapshot to a sibling temp folder, then swap it in."""

        def write_files(folder: Path) -> None:
            self._index.save_index(str(folder / _INDEX_FILE))
            self._vectors.save(folder)

        meta = {"kind": "hnsw", "dim": self.dim, "count": len(self._vectors), **asdict(self.params)}
        with self._lock:
            write_snapshot(path, meta, write_files)

    @classmethod
    def load(cls, path: Path) -> HnswNeighborIndex:
        meta, path = read_snapshot_meta(path, "hnsw")
        params = HnswParams(
            m=meta["m"],
            ef_construction=meta["ef_construction"],
            ef_search=meta["ef_search"],
            num_threads=meta["num_threads"],
            seed=meta["seed"],
        )
        vectors = VectorTable.load(path, int(meta["dim"]))
        index = cls(vectors.dim, params, capacity=16)
        index._vectors = vectors
        capacity = max(vectors.data.shape[0], 16)
        index._index.load_index(str(path / _INDEX_FILE), max_elements=capacity)
        index._index.set_num_threads(params.num_threads or os.cpu_count() or 1)
        return index

    @classmethod
    def rebuild(
        cls,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        params: HnswParams | None = None,
    ) -> HnswNeighborIndex:
        """A fresh index from stored embeddings (when no snapshot exists or it is stale)."""
        index = cls(vectors.shape[1], params, capacity=max(ids.size, 16))
        index.upsert(ids, vectors)
        return index

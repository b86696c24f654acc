"""Approximate cosine k-NN with hnswlib; the service's default NeighborIndex."""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.knn import empty_graph_arrays, graph_rows_into
from grace_selection.adapters.snapshot import read_snapshot_meta, write_snapshot
from grace_selection.adapters.vectors import VectorTable, normalize_rows
from grace_selection.core.graph import KnnGraph

_INDEX_FILE = "hnsw.bin"
# Vectors read back from hnswlib per query batch for the full graph. hnswlib 0.8's get_items
# passes through Python float lists: ~11x the block's bytes at its peak (measured: +340 MB
# for 20k x 384), so blocks stay small (2048 x 384: ~35 MB).
_READ_BLOCK = 2048


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
    The vectors live in hnswlib alone (it stores them unit-normalised): the full k-NN graph reads
    them back in blocks, so the index costs one float32 copy plus its links, not two copies.
    """

    def __init__(self, dim: int, params: HnswParams | None = None, capacity: int = 1024) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.params = params or HnswParams()
        self._dim = dim
        self._present = np.zeros(max(capacity, 1), dtype=bool)  # (capacity,) by id
        self._count = 0
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
        return self._dim

    def __len__(self) -> int:
        return self._count

    def upsert(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        VectorTable(self._dim, 1).check(ids, vectors)
        if not ids.size:
            return
        with self._lock:
            needed = self._count + ids.size
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            if int(ids.max()) >= self._present.size:
                grown = np.zeros(max(int(ids.max()) + 1, 2 * self._present.size), dtype=bool)
                grown[: self._present.size] = self._present
                self._present = grown
            # Zero rows stay zero: hnswlib would divide by their zero norm.
            self._index.add_items(normalize_rows(vectors), ids.astype(np.uint64))
            self._count += int(np.count_nonzero(~self._present[ids]))
            self._present[ids] = True

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
        take = min(k, self._count)
        if take == 0 or unit.shape[0] == 0:
            return ids, sims
        self._index.set_ef(max(self.params.ef_search, 2 * take))
        labels, distances = self._index.knn_query(unit, k=take)
        ids[:, :take] = labels.astype(np.int64)
        sims[:, :take] = 1.0 - distances
        return ids, sims

    def knn_graph(self, k: int, vectors: npt.NDArray[np.floating] | None = None) -> KnnGraph:
        """vectors: (>= id bound, dim) the unit vectors the index holds, when the caller has
        them (the graph keeper does): faster than reading them back from hnswlib."""
        with self._lock:
            present = self._present[: self._id_bound()].copy()
            # Each block's answers go straight into the graph: no (n, k + 1) int64 copy.
            graph_ids, graph_sims = empty_graph_arrays(present.size, k)
            stored = np.flatnonzero(present)
            for start in range(0, stored.size, _READ_BLOCK):
                block = stored[start : start + _READ_BLOCK]
                if vectors is None:
                    rows = self._index.get_items(block, return_type="numpy")
                else:
                    rows = vectors[block]
                unit = np.asarray(rows, dtype=np.float32)
                ids, sims = self._query(unit, k + 1)
                graph_rows_into(ids, sims, block, graph_ids, graph_sims)
        return KnnGraph(graph_ids, graph_sims)

    def _id_bound(self) -> int:
        stored = np.flatnonzero(self._present)
        return int(stored[-1]) + 1 if stored.size else 0

    def save(self, path: Path) -> None:
        """Write the snapshot to a sibling temp folder, then swap it in."""

        def write_files(folder: Path) -> None:
            self._index.save_index(str(folder / _INDEX_FILE))
            with (folder / "present.npy").open("wb") as fh:
                np.save(fh, self._present[: self._id_bound()])

        meta = {"kind": "hnsw", "dim": self.dim, "count": self._count, **asdict(self.params)}
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
        present = np.load(path / "present.npy")  # older snapshots also hold vectors.npy: unused
        index = cls(int(meta["dim"]), params, capacity=max(present.size, 16))
        index._present[: present.size] = present
        index._count = int(np.count_nonzero(present))
        capacity = max(present.size, 16)
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

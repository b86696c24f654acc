"""Exact cosine k-NN on an accelerator: blocked matrix products in torch, or faiss's flat index.

Off by default (GRACE_INDEX=hnsw). With GRACE_INDEX=torch (or faiss) and GRACE_INDEX_DEVICE=cuda
the graph build is exact and runs on the GPU: at 1M x 64 the all-points search is 6.4e13
multiply-adds, seconds on one GPU, where HNSW needs minutes on two CPU cores and is approximate.
device="cpu" runs the same code on the CPU (the tests check it against BruteForceIndex).

torch and faiss are imported here and only here, when an index is made: the service extra has
neither, and the `gpu` extra installs torch.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from grace_proto.usage import MissingExtraError, missing_extra
from grace_selection.adapters.knn import graph_from_neighbors
from grace_selection.adapters.snapshot import read_snapshot_meta, write_snapshot
from grace_selection.adapters.vectors import VectorTable, normalize_rows
from grace_selection.core.graph import KnnGraph

Backend = Literal["torch", "faiss"]
# Similarity scratch per block of query rows, (rows, N) float32 on the device: 1 GiB.
_BLOCK_BYTES = 1 << 30


def import_backend(backend: Backend, device: str) -> Any:
    """The backend's module, checked to reach `device`; a clear error naming the fix if not."""
    what = f"GRACE_INDEX={backend}"
    try:
        module: Any = importlib.import_module(backend)
    except ImportError as exc:
        if backend == "faiss":
            raise MissingExtraError(
                "faiss", "pip install faiss-gpu-cu12 (or faiss-cpu)", what
            ) from exc
        raise (missing_extra(exc, what, extra="gpu") or exc) from exc
    if device.startswith("cuda"):
        has_gpu = module.cuda.is_available() if backend == "torch" else module.get_num_gpus() > 0
        if not has_gpu:
            raise RuntimeError(
                f"{what} with GRACE_INDEX_DEVICE={device}: no CUDA device is visible to "
                f"{backend}; set GRACE_INDEX_DEVICE=cpu or GRACE_INDEX=hnsw"
            )
    return module


class DeviceExactIndex:
    """Implements NeighborIndex exactly, searching on `device` with torch or faiss.

    The unit vectors live in host memory (VectorTable, the one copy that is saved); a device
    copy is made for a search and dropped after it, so an idle service holds no GPU memory.
    """

    def __init__(
        self,
        dim: int,
        backend: Backend = "torch",
        device: str = "cuda",
        block_bytes: int = _BLOCK_BYTES,
    ) -> None:
        self._module = import_backend(backend, device)
        self.backend: Backend = backend
        self.device = device
        self._block_bytes = block_bytes
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
            unit = normalize_rows(np.asarray(vectors, dtype=np.float32))
            return self._search(unit, k)

    def knn_graph(self, k: int, vectors: npt.NDArray[np.floating] | None = None) -> KnnGraph:
        """`vectors` is ignored: this index searches its own exact copy on its device."""
        with self._lock:
            present = self._vectors.present.copy()
            ids, sims = self._search(self._vectors.data, k + 1)
        return graph_from_neighbors(ids, sims, present, k)

    def _search(
        self, unit: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top k of each row of `unit` among the present vectors: (n, k) ids and sims."""
        out_ids = np.full((unit.shape[0], k), -1, dtype=np.int64)
        out_sims = np.full((unit.shape[0], k), -np.inf, dtype=np.float32)
        present = np.flatnonzero(self._vectors.present)
        take = min(k, present.size)
        if take == 0 or unit.shape[0] == 0:
            return out_ids, out_sims
        data = np.ascontiguousarray(self._vectors.data[present])  # (P, d), present rows only
        search = self._search_torch if self.backend == "torch" else self._search_faiss
        ids, sims = search(data, unit, take)
        out_ids[:, :take] = present[ids]
        out_sims[:, :take] = sims
        return out_ids, out_sims

    def _search_torch(
        self, data: npt.NDArray[np.float32], unit: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        torch = self._module
        ids = np.empty((unit.shape[0], k), dtype=np.int64)
        sims = np.empty((unit.shape[0], k), dtype=np.float32)
        rows = max(1, self._block_bytes // (4 * data.shape[0]))
        with torch.inference_mode():
            base = torch.from_numpy(data).to(self.device)  # (P, d)
            for start in range(0, unit.shape[0], rows):
                block = torch.from_numpy(unit[start : start + rows]).to(self.device)  # (B, d)
                top = torch.topk(block @ base.T, k, dim=1)  # (B, P) -> (B, k), sorted
                ids[start : start + rows] = top.indices.cpu().numpy()
                sims[start : start + rows] = top.values.float().cpu().numpy()
            del base
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()  # hand the cached blocks back: an idle service holds none
        return ids, sims

    def _search_faiss(
        self, data: npt.NDArray[np.float32], unit: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        faiss = self._module
        flat = faiss.IndexFlatIP(data.shape[1])  # inner product of unit vectors: cosine
        if self.device.startswith("cuda"):
            flat = faiss.index_cpu_to_all_gpus(flat)
        flat.add(data)
        sims, ids = flat.search(np.ascontiguousarray(unit), k)
        return ids.astype(np.int64), sims.astype(np.float32)

    def save(self, path: Path) -> None:
        meta = {"kind": "exact", "dim": self.dim, "backend": self.backend}
        with self._lock:
            write_snapshot(path, meta, self._vectors.save)

    @classmethod
    def load(cls, path: Path, backend: Backend = "torch", device: str = "cuda") -> DeviceExactIndex:
        """A saved index, searched with this process's backend and device (not the saver's)."""
        meta, path = read_snapshot_meta(path, "exact")
        index = cls(int(meta["dim"]), backend, device)
        index._vectors = VectorTable.load(path, index.dim)
        return index

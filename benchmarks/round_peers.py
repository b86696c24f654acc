"""The peers of the round benchmark: other ways to keep an all-points k-NN graph current.

Each peer holds its own index over the job's embeddings and answers `update(ids, vectors)`
with the k-NN graph (ids, cosine) after those rows changed. Only the graph upkeep is timed for
a peer; the rest of the round is the product's whatever graph it gets.
- hnswlib: the raw library, the same parameters as the product (M 16, ef_construction 200,
  ef 64); changed rows are updated in place (add_items on an existing label), then every row
  that lists a changed one, and the changed ones, are re-queried.
- faiss-hnsw: IndexHNSWFlat over inner product; faiss HNSW cannot replace a vector, so every
  later round rebuilds it.
- faiss-ivf: IndexIVFFlat, 4 sqrt(N) lists, nprobe 16; changed rows are removed and re-added
  (the quantiser is kept), then re-queried with the rows that list them.
- pynndescent: NNDescent(cosine) and its own `update(xs_updated=...)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
_BLOCK = 65536


def _unit(x: F32) -> F32:
    out: F32 = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def _drop_self(ids: I64, sims: F32, rows: I64, k: int) -> tuple[I64, F32]:
    is_self = ids == rows[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return (
        ids[keep].reshape(rows.size, -1)[:, :k],
        sims[keep].reshape(rows.size, -1)[:, :k],
    )


def _listers(nb: I64, changed: I64) -> I64:
    mask = np.zeros(nb.shape[0] + 1, dtype=bool)
    mask[changed] = True
    rows: npt.NDArray[np.bool_] = np.asarray(mask[nb].any(axis=1))
    rows[changed] = True
    return np.flatnonzero(rows).astype(np.int64)


class HnswlibPeer:
    def __init__(self, vectors: F32, k: int) -> None:
        import hnswlib

        n, dim = vectors.shape
        self.k = k
        self.index = hnswlib.Index(space="cosine", dim=dim)
        self.index.init_index(max_elements=n, ef_construction=200, M=16, random_seed=100)
        self.index.set_num_threads(2)
        for lo in range(0, n, _BLOCK):
            self.index.add_items(vectors[lo : lo + _BLOCK], np.arange(lo, min(n, lo + _BLOCK)))
        self.index.set_ef(64)
        self.nb, self.sim = self._query(vectors, np.arange(n, dtype=np.int64))

    def _query(self, vectors: F32, rows: I64) -> tuple[I64, F32]:
        nb = np.empty((rows.size, self.k), np.int64)
        sim = np.empty((rows.size, self.k), np.float32)
        for lo in range(0, rows.size, _BLOCK):
            r = rows[lo : lo + _BLOCK]
            labels, dist = self.index.knn_query(vectors[r], k=self.k + 1)
            nb[lo : lo + r.size], sim[lo : lo + r.size] = _drop_self(
                labels.astype(np.int64), (1 - dist).astype(np.float32), r, self.k
            )
        return nb, sim

    def update(self, ids: I64, vectors: F32) -> I64:
        self.index.add_items(vectors[ids], ids)  # existing labels: updated in place
        rows = _listers(self.nb, ids)
        self.nb[rows], self.sim[rows] = self._query(vectors, rows)
        return self.nb


class FaissHnswPeer:
    def __init__(self, vectors: F32, k: int) -> None:
        self.k = k
        self.nb = self._build(vectors)

    def _build(self, vectors: F32) -> I64:
        import faiss

        faiss.omp_set_num_threads(2)
        index = faiss.IndexHNSWFlat(vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.hnsw.efSearch = 64
        for lo in range(0, vectors.shape[0], _BLOCK):
            index.add(_unit(vectors[lo : lo + _BLOCK]))
        return _search_all(index, vectors, self.k)

    def update(self, ids: I64, vectors: F32) -> I64:
        self.nb = self._build(vectors)  # faiss HNSW has no replace
        return self.nb


class FaissIvfPeer:
    def __init__(self, vectors: F32, k: int) -> None:
        import faiss

        faiss.omp_set_num_threads(2)
        n, dim = vectors.shape
        self.k = k
        lists = int(4 * np.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        self.index.train(_unit(vectors[rng.choice(n, min(n, 40 * lists), replace=False)]))
        self.index.nprobe = 16
        self.quantizer = quantizer  # faiss keeps a raw pointer: the Python object must live
        for lo in range(0, n, _BLOCK):
            hi = min(n, lo + _BLOCK)
            self.index.add_with_ids(_unit(vectors[lo:hi]), np.arange(lo, hi, dtype=np.int64))
        self.nb = _search_all(self.index, vectors, k)

    def update(self, ids: I64, vectors: F32) -> I64:
        self.index.remove_ids(ids)  # type: ignore[arg-type]  # faiss's wrapper takes arrays too
        self.index.add_with_ids(_unit(vectors[ids]), ids)
        rows = _listers(self.nb, ids)
        self.nb[rows] = _search_rows(self.index, vectors, rows, self.k)
        return self.nb


def _search_rows(index: Any, vectors: F32, rows: I64, k: int) -> I64:
    out = np.empty((rows.size, k), np.int64)
    for lo in range(0, rows.size, _BLOCK):
        r = rows[lo : lo + _BLOCK]
        sims, labels = index.search(_unit(vectors[r]), k + 1)
        out[lo : lo + r.size] = _drop_self(labels.astype(np.int64), sims, r, k)[0]
    return out


def _search_all(index: Any, vectors: F32, k: int) -> I64:
    return _search_rows(index, vectors, np.arange(vectors.shape[0], dtype=np.int64), k)


class PynndescentPeer:
    @classmethod
    def warm_up(cls) -> None:
        vectors = np.random.default_rng(1).standard_normal((3000, 384)).astype(np.float32)
        peer = cls(vectors, 10)
        peer.update(np.arange(100, dtype=np.int64), vectors)

    def __init__(self, vectors: F32, k: int) -> None:
        from pynndescent import NNDescent

        self.k = k
        self.index = NNDescent(
            vectors, metric="cosine", n_neighbors=k + 1, n_jobs=2, random_state=0
        )
        self.nb = self._graph()

    def _graph(self) -> I64:
        ids, _ = self.index.neighbor_graph
        rows = np.arange(ids.shape[0], dtype=np.int64)
        return _drop_self(ids.astype(np.int64), np.zeros(ids.shape, np.float32), rows, self.k)[0]

    def update(self, ids: I64, vectors: F32) -> I64:
        self.index.update(xs_updated=vectors[ids], updated_indices=ids)
        self.nb = self._graph()
        return self.nb


PEERS: dict[str, Any] = {
    "hnswlib": HnswlibPeer,
    "faiss-hnsw": FaissHnswPeer,
    "faiss-ivf": FaissIvfPeer,
    "pynndescent": PynndescentPeer,
}

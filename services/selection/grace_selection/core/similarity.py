"""The k-NN graph as a sparse similarity matrix with edges in both directions, for coverage.

Facility location asks "how well does pick c stand in for sample i?" for every sample that
lists c as a neighbour *and* every sample c lists, so each directed edge is used both ways.
Negative similarities cover nothing and are dropped; every sample covers itself with 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import numba_enabled, similarity_kernels
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph

# Rows per block of the (rows, k, k) mutual-edge test: about 13 MB of temporaries at k = 10.
_MUTUAL_BLOCK = 32768


@dataclass(frozen=True, slots=True, eq=False)
class SparseSimilarity:
    """CSR rows: row c holds (cols[p], vals[p]) for p in indptr[c]:indptr[c + 1], the samples c
    covers and how well. The first entry of every row is c itself with 1.0; no column repeats.

    indptr: (N + 1,) int64, cols: (nnz,) int32, vals: (nnz,) float32 in (0, 1].
    """

    indptr: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int32]
    vals: npt.NDArray[np.float32]

    @property
    def n(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row_entries(
        self, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Positions of every entry of `rows`, concatenated row after row, and for each
        position the index into `rows` it belongs to: (m,) int64 and (m,) int64."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        owner = np.repeat(np.arange(rows.shape[0], dtype=np.int64), lengths)
        # Position = row start + offset inside the row; the offset is the running count minus
        # the count before this row began.
        first_of_row = np.cumsum(lengths) - lengths
        positions = np.arange(owner.shape[0], dtype=np.int64) + (starts - first_of_row)[owner]
        return positions, owner

    def coverage(self, picks: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """cover[i] = max over picks c of W[c, i] (0 where nothing covers i): (N,) float64."""
        cover = np.zeros(self.n, dtype=np.float64)
        positions, _ = self.row_entries(np.asarray(picks, dtype=np.int64))
        np.maximum.at(cover, self.cols[positions], self.vals[positions])
        return cover


def build_sparse_similarity(graph: KnnGraph) -> SparseSimilarity:
    """Symmetrise the k-NN graph: W[c, i] = sim(c, i) if i lists c or c lists i, else 0.

    A mutual pair keeps each side's own value; a neighbour listed twice in one row counts once,
    with its first listing. Compiled when numba is enabled (about 3x less CPU at N = 1M), else
    pure numpy; both build the same arrays.
    """
    if numba_enabled():
        return _build_sparse_similarity_compiled(graph)
    return _build_sparse_similarity_numpy(graph)


def _build_sparse_similarity_compiled(graph: KnnGraph) -> SparseSimilarity:
    """The two kernels, on arrays numpy allocates (huge pages: see mark_sparse_similarity)."""
    nb = np.ascontiguousarray(graph.neighbors)
    sim = np.ascontiguousarray(graph.similarities)
    n, k = nb.shape
    kept = np.empty((n, k), dtype=np.int32)
    one_way = np.empty((n, k), dtype=np.bool_)
    count = np.empty(n, dtype=np.int64)
    similarity_kernels().mark_sparse_similarity(nb, sim, kept, one_way, count)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(count, out=indptr[1:])
    cols = np.empty(int(indptr[-1]), dtype=np.int32)
    vals = np.empty(int(indptr[-1]), dtype=np.float32)
    similarity_kernels().fill_sparse_similarity(sim, kept, one_way, count, indptr, cols, vals)
    return SparseSimilarity(indptr, cols, vals)


def _build_sparse_similarity_numpy(graph: KnnGraph) -> SparseSimilarity:
    """Pure numpy: O(N k^2) for the mutual test plus one sort of the one-way edges; about 2 s of
    CPU at N = 1M, k = 10."""
    nb, sim = graph.neighbors, graph.similarities
    n, k = nb.shape
    rows = np.arange(n, dtype=np.int32)[:, None]  # (N, 1)
    keep = (nb != NO_NEIGHBOR) & (nb != rows) & (sim > 0)  # (N, k)
    for t in range(1, k):
        keep[:, t] &= ~(nb[:, :t] == nb[:, t : t + 1]).any(axis=1)
    kept = np.where(keep, nb, NO_NEIGHBOR)  # (N, k) int32, -1 where dropped

    # An edge i -> j is mutual when j also keeps i; then row j already holds (j, i) and the
    # reversed copy must not be added again.
    mutual = np.zeros((n, k), dtype=np.bool_)
    for a in range(0, n, _MUTUAL_BLOCK):
        b = min(n, a + _MUTUAL_BLOCK)
        j = np.maximum(kept[a:b], 0)  # (c, k); -1 rows read row 0, masked below
        mutual[a:b] = (kept[j] == rows[a:b, :, None]).any(axis=2) & keep[a:b]
    one_way = keep & ~mutual
    src = np.broadcast_to(rows, (n, k))[one_way]  # i of each one-way edge i -> j
    dst = kept[one_way]
    one_way_vals = sim[one_way]
    order = np.argsort(dst, kind="stable")
    src, dst, one_way_vals = src[order], dst[order], one_way_vals[order]

    out_count = keep.sum(axis=1)
    in_count = np.bincount(dst, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(out_count + in_count + 1, out=indptr[1:])
    cols = np.empty(int(indptr[-1]), dtype=np.int32)
    vals = np.empty(int(indptr[-1]), dtype=np.float32)
    row_start = indptr[:-1]
    # Row layout: [self, kept out-edges in list order, reversed one-way in-edges by source].
    cols[row_start] = np.arange(n, dtype=np.int32)
    vals[row_start] = 1.0
    out_pos = (row_start[:, None] + np.cumsum(keep, axis=1))[keep]
    cols[out_pos] = kept[keep]
    vals[out_pos] = sim[keep]
    in_first = np.cumsum(in_count) - in_count
    in_rank = np.arange(dst.shape[0], dtype=np.int64) - in_first[dst]
    in_pos = row_start[dst] + 1 + out_count[dst] + in_rank
    cols[in_pos] = src
    vals[in_pos] = one_way_vals
    return SparseSimilarity(indptr, cols, vals)

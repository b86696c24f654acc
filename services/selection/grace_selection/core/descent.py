"""Local joins: keep a k-NN graph true for nodes that moved a little, without an index.

NN-descent's observation (Dong, Charikar and Li, WWW 2011): a neighbour of a neighbour is
likely a neighbour. A node that moved less than its own neighbourhood radius still finds its
true neighbours among its old row and the rows of those neighbours, so comparing it with them
(plus a few random samples, which keep a row from staying trapped in a stale region) rebuilds
its row from O(k^2) dot products instead of an index query or a whole rebuild. A node that
moved farther than its radius has no such guarantee; the caller re-queries those.

Three steps, each a pure function over the graph and the current unit vectors:
1. `rescore_edges`: rows that list a moved node get that edge's similarity recomputed and are
   re-sorted, so no row keeps a similarity its neighbour no longer has;
2. `join_rows`: each given row is rebuilt from its row, its neighbours' rows and random picks;
3. after each join, every rebuilt row's edges are offered to the rows they name (reverse
   edges, `merge_edges`), so that unmoved nodes near a moved node's new place list it.
Rows stay sorted best first; padding (-1) sits at the end with similarity 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph

IdArray = npt.NDArray[np.int64]
# Gathered candidate vectors per block: big enough for BLAS, small enough for the cache-ish
# working set and to keep a 1M-row join's extra memory to tens of MB.
_BLOCK_BYTES = 32 * 1024 * 1024


def rescore_edges(
    graph: KnnGraph,
    vectors: npt.NDArray[np.floating],
    moved: npt.NDArray[np.bool_],
) -> KnnGraph:
    """Recompute the similarity of every edge that names a moved node (moved: (N,) mask) and
    re-sort the rows that hold one. vectors: (N, d) current unit vectors (float32 or float16)."""
    nb, sim = graph.neighbors.copy(), graph.similarities.copy()
    lookup = np.append(moved, False)  # padding (-1) lands on the last slot, which is False
    touched = lookup[nb]  # (N, k)
    rows_with = np.flatnonzero(touched.any(axis=1))
    if rows_with.size == 0:
        return graph
    edge_rows, edge_cols = np.nonzero(touched)
    step = max(1, _BLOCK_BYTES // (8 * vectors.shape[1]))
    for start in range(0, edge_rows.size, step):
        r, c = edge_rows[start : start + step], edge_cols[start : start + step]
        a = vectors[r].astype(np.float32, copy=False)
        b = vectors[nb[r, c]].astype(np.float32, copy=False)
        sim[r, c] = np.einsum("ij,ij->i", a, b)
    _sort_rows(nb, sim, rows_with)
    return KnnGraph(nb, sim)


def join_rows(
    graph: KnnGraph,
    vectors: npt.NDArray[np.floating],
    rows: npt.ArrayLike,
    present: npt.NDArray[np.bool_],
    rng: np.random.Generator,
    *,
    random_candidates: int = 4,
    iterations: int = 2,
) -> KnnGraph:
    """Rebuild `rows` from their neighbours' neighbours, then offer their edges back.

    vectors: (N, d) current unit vectors; present: (N,) which nodes may be neighbours.
    Each iteration compares every row with up to k + k^2 + random_candidates candidates; a
    second iteration lets a row reach nodes that the first one brought into its neighbours'
    rows. Returns a new graph; the input is untouched.
    """
    row_ids = np.unique(np.asarray(rows, dtype=np.int64))
    nb, sim = graph.neighbors.copy(), graph.similarities.copy()
    pool = np.flatnonzero(present).astype(np.int64)
    if row_ids.size == 0 or graph.k == 0 or pool.size < 2:
        return graph
    width = graph.k + graph.k * graph.k + random_candidates
    step = max(1, _BLOCK_BYTES // (width * vectors.shape[1] * 4))
    active = row_ids
    for _ in range(iterations):
        changed = np.zeros(active.size, dtype=np.bool_)
        for start in range(0, active.size, step):
            block = active[start : start + step]
            cand = _candidates(nb, block, pool, rng, random_candidates)  # (B, width)
            sims = _similarities(vectors, block, cand)
            best, best_sims = _best_k(block, cand, sims, graph.k)
            changed[start : start + step] = (np.sort(best, axis=1) != np.sort(nb[block])).any(1)
            nb[block], sim[block] = best, best_sims
        dst = nb[active].reshape(-1).astype(np.int64)
        src = np.repeat(active, graph.k)
        merge_edges(nb, sim, dst, src, sim[active].reshape(-1))
        # NN-descent's rule: a row whose list did not change has nothing new to join next.
        active = active[changed]
        if active.size == 0:
            break
    return KnnGraph(nb, sim)


def merge_edges(
    neighbors: npt.NDArray[np.int32],
    similarities: npt.NDArray[np.float32],
    dst: IdArray,
    src: IdArray,
    sims: npt.NDArray[np.float32],
) -> None:
    """In place: offer edge dst -> src (similarity sims) to row dst; each row keeps its k best
    distinct entries, sorted. Any number of offers per row (unlike core.repair's one)."""
    k = neighbors.shape[1]
    real = (dst != NO_NEIGHBOR) & (src != NO_NEIGHBOR) & (dst != src)
    dst, src, sims = dst[real], src[real], sims[real].astype(np.float32)
    if dst.size == 0:
        return
    # Only offers that beat the row's weakest entry (padding counts as -inf) can enter.
    worst = np.where(neighbors[:, -1] == NO_NEIGHBOR, -np.inf, similarities.min(axis=1))
    better = sims > worst[dst]
    dst, src, sims = dst[better], src[better], sims[better]
    if dst.size == 0:
        return
    rows = np.unique(dst)
    old_src = neighbors[rows].reshape(-1).astype(np.int64)
    keep = old_src != NO_NEIGHBOR
    all_dst = np.concatenate([np.repeat(rows, k)[keep], dst])
    all_src = np.concatenate([old_src[keep], src])
    all_sim = np.concatenate([similarities[rows].reshape(-1)[keep], sims])
    # One entry per (dst, src): the stored one and an offer agree up to rounding.
    order = np.lexsort((all_src, all_dst))
    all_dst, all_src, all_sim = all_dst[order], all_src[order], all_sim[order]
    first = np.ones(all_dst.size, dtype=np.bool_)
    first[1:] = (all_dst[1:] != all_dst[:-1]) | (all_src[1:] != all_src[:-1])
    all_dst, all_src, all_sim = all_dst[first], all_src[first], all_sim[first]
    order = np.lexsort((-all_sim, all_dst))
    all_dst, all_src, all_sim = all_dst[order], all_src[order], all_sim[order]
    starts = np.flatnonzero(np.r_[True, all_dst[1:] != all_dst[:-1]])
    rank = np.arange(all_dst.size) - np.repeat(starts, np.diff(np.r_[starts, all_dst.size]))
    top = rank < k
    neighbors[rows] = NO_NEIGHBOR
    similarities[rows] = 0.0
    neighbors[all_dst[top], rank[top]] = all_src[top]
    similarities[all_dst[top], rank[top]] = all_sim[top]


def _candidates(
    nb: npt.NDArray[np.int32],
    block: IdArray,
    pool: IdArray,
    rng: np.random.Generator,
    random_candidates: int,
) -> IdArray:
    """(B, k + k^2 + r): each row's neighbours, theirs (-1 where padding) and random picks."""
    own = nb[block].astype(np.int64)  # (B, k)
    second = nb[np.where(own >= 0, own, 0)].astype(np.int64)  # (B, k, k)
    second[own < 0] = NO_NEIGHBOR
    picks = pool[rng.integers(0, pool.size, size=(block.size, random_candidates))]
    return np.concatenate([own, second.reshape(block.size, -1), picks], axis=1)


def _similarities(
    vectors: npt.NDArray[np.floating], block: IdArray, cand: IdArray
) -> npt.NDArray[np.float32]:
    """(B, C) cosine of each row's vector with its candidates'; -inf where a candidate is
    padding or the row itself."""
    query = vectors[block].astype(np.float32, copy=False)  # (B, d)
    gathered = vectors[np.where(cand >= 0, cand, 0)].astype(np.float32, copy=False)  # (B, C, d)
    sims: npt.NDArray[np.float32] = np.matmul(gathered, query[:, :, None])[:, :, 0]
    sims[(cand < 0) | (cand == block[:, None])] = -np.inf
    return sims


def _best_k(
    block: IdArray, cand: IdArray, sims: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Each row's k best distinct candidates, best first; -1 / 0 pad a short row."""
    order = np.argsort(cand, axis=1)
    cand = np.take_along_axis(cand, order, axis=1)
    sims = np.take_along_axis(sims, order, axis=1)
    sims[:, 1:][cand[:, 1:] == cand[:, :-1]] = -np.inf  # a repeated id scores once
    take = min(k, cand.shape[1])
    part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
    part_sims = np.take_along_axis(sims, part, axis=1)
    best = np.argsort(-part_sims, axis=1, kind="stable")
    ids = np.take_along_axis(np.take_along_axis(cand, part, axis=1), best, axis=1)
    top = np.take_along_axis(part_sims, best, axis=1)
    real = np.isfinite(top)
    out_ids = np.full((block.size, k), NO_NEIGHBOR, dtype=np.int32)
    out_sims = np.zeros((block.size, k), dtype=np.float32)
    out_ids[:, :take] = np.where(real, ids, NO_NEIGHBOR)
    out_sims[:, :take] = np.where(real, top, 0.0)
    return out_ids, out_sims


def _sort_rows(nb: npt.NDArray[np.int32], sim: npt.NDArray[np.float32], rows: IdArray) -> None:
    """In place: rows best first, padding last."""
    key = np.where(nb[rows] == NO_NEIGHBOR, np.inf, -sim[rows])
    order = np.argsort(key, axis=1, kind="stable")
    nb[rows] = np.take_along_axis(nb[rows], order, axis=1)
    sim[rows] = np.take_along_axis(sim[rows], order, axis=1)

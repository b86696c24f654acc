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

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import join_kernels, kernel_vectors, numba_enabled
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph

IdArray = npt.NDArray[np.int64]
_T = TypeVar("_T")
# Gathered candidate vectors per block: big enough for BLAS, small enough for the cache-ish
# working set and to keep a 1M-row join's extra memory to tens of MB.
_BLOCK_BYTES = 32 * 1024 * 1024
# The compiled kernels release the GIL; a pass is split into this many slices of rows run on
# threads (each row of a pass reads the graph as it was when the pass began, so the slices
# are independent and the graph is the same for any count).
_THREADS = max(1, min(8, os.cpu_count() or 1))
# Below this many rows a pass runs on the calling thread alone.
_THREAD_MIN_ROWS = 4096
# Rows whose reverse edges the compiled join offers at a time (see join_rows).
_OFFER_ROWS = 65_536


def measure_unit_drift(
    old: npt.NDArray[np.floating], new: npt.NDArray[np.floating]
) -> npt.NDArray[np.float32]:
    """Row-wise cosine distance 1 - old_i . new_i of unit (or zero) rows, (m,) float32 in [0, 2].

    core.repair.measure_drift for rows already normalised, in float32 and block by block
    (that one takes any rows, in float64: ~20x the time at 300k x 384). An unchanged row is
    exactly 0, a zero row against a non-zero one 1, two zero rows 0. Raises ValueError on
    non-finite rows.
    """
    if old.shape != new.shape or old.ndim != 2:
        raise ValueError(f"new: must have the shape of old {old.shape}, got {new.shape}")
    out = np.empty(old.shape[0], dtype=np.float32)
    step = max(1, _BLOCK_BYTES // (8 * max(1, old.shape[1])))
    for start in range(0, old.shape[0], step):
        part = slice(start, start + step)
        a = old[part].astype(np.float32, copy=False)
        b = new[part].astype(np.float32, copy=False)
        distance = 1.0 - np.einsum("ij,ij->i", a, b)
        both_zero = ~a.any(axis=1) & ~b.any(axis=1)
        distance[(a == b).all(axis=1) | both_zero] = 0.0
        out[part] = np.clip(distance, 0.0, 2.0)
    if not np.isfinite(out).all():
        raise ValueError("embeddings hold NaN or inf; send finite embeddings")
    return out


def rescore_edges(
    graph: KnnGraph,
    vectors: npt.NDArray[np.floating],
    moved: npt.NDArray[np.bool_],
    *,
    in_place: bool = False,
) -> KnnGraph:
    """Recompute the similarity of every edge from or to a moved node (moved: (N,) mask) and
    re-sort the rows that hold one. vectors: (N, d) current unit vectors (float32 or float16).
    Compiled where `acceleration.kernel_vectors` takes them, else numpy; the same graph.
    in_place: write into `graph`'s arrays (an owner of them saves a copy of the lists)."""
    nb, sim = lists_of(graph, in_place)
    readable = kernel_vectors(vectors)
    if readable is not None:
        moved = np.ascontiguousarray(moved, dtype=np.bool_)
        rescore = join_kernels().rescore_edges
        touched = _split(nb.shape[0], lambda lo, hi: rescore(nb, sim, readable, moved, lo, hi))
        return KnnGraph(nb, sim) if sum(touched) else graph
    return _rescore_edges_numpy(graph, nb, sim, vectors, moved)


def _rescore_edges_numpy(
    graph: KnnGraph,
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.floating],
    moved: npt.NDArray[np.bool_],
) -> KnnGraph:
    lookup = np.append(moved, False)  # padding (-1) lands on the last slot, which is False
    # A moved row's own edges too: its similarities to unmoved neighbours are as stale.
    touched = (lookup[nb] | moved[:, None]) & (nb != NO_NEIGHBOR)  # (N, k)
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
    expand: int | None = None,
    current: bool = False,
    in_place: bool = False,
    ranks: IdArray | None = None,
) -> KnnGraph:
    """Rebuild `rows` from their neighbours' neighbours, then offer their edges back.

    vectors: (N, d) current unit vectors (compiled where `acceleration.kernel_vectors` takes
    them: C-ordered float32, or float16 on a CPU that converts half floats; else numpy, the
    same graph); present: (N,) which nodes may be neighbours. Each iteration compares every
    row with up to k + k^2 + random_candidates candidates; a second iteration lets a row reach
    nodes that the first one brought into its neighbours' rows. current: the graph's
    similarities are the current cosines (`rescore_edges` ran), so a row's own entries are not
    scored again (a fifth of a join's dot products at expand k / 2). Returns a new graph and
    leaves the input untouched, unless `in_place`: then the input's arrays are rebuilt (an
    owner of them saves two copies of the lists at 1M).
    ranks: (N,) each node's place in a walk of the graph (`walk_ranks`): the compiled pass
    rebuilds the rows in that order, which reads neighbourhoods while they are in the cache
    (the graph keeper's joins at 1M x 384: 0.8-0.9x the time of id order in most rounds, no
    gain in one; docs/results/join_order.md). Any order gives the same graph.
    """
    row_ids = np.unique(np.asarray(rows, dtype=np.int64))
    nb, sim = lists_of(graph, in_place)
    pool = np.flatnonzero(present).astype(np.int64)
    if row_ids.size == 0 or graph.k == 0 or pool.size < 2:
        return graph
    readable = kernel_vectors(vectors)
    expand = graph.k if expand is None else min(expand, graph.k)
    active = row_ids
    previous = np.empty((0, graph.k), dtype=np.int32)  # what the last pass read (none yet)
    for iteration in range(iterations):
        picks = pool[rng.integers(0, pool.size, size=(active.size, random_candidates))]
        # Every row of a pass reads the graph as it was when the pass began (so the rows can
        # be rebuilt in any order, or block by block, and give the same graph).
        if readable is not None:
            visit = (
                np.arange(active.size, dtype=np.int64)
                if ranks is None
                else np.argsort(ranks[active], kind="stable").astype(np.int64)
            )
            best, best_sims, changed = _join_pass_compiled(
                nb, sim, readable, active, picks, visit, expand, current, previous
            )
            if iteration + 1 < iterations:  # what the next pass, if any, compares with
                previous = nb.copy()
        else:
            best, best_sims, changed = _join_pass_numpy(
                nb, sim if current else None, vectors, active, picks, expand
            )
        nb[active], sim[active] = best, best_sims
        # The compiled merge takes offers one by one, so slices in order give the same rows
        # while the int64 offer arrays stay small (all at once: 16 B per offer, 270 MB for
        # 850k rows of 20 at 1M, at the round's peak). The numpy merge sorts all at once.
        step = _OFFER_ROWS if readable is not None else max(active.size, 1)
        for lo in range(0, active.size, step):
            hi = min(active.size, lo + step)
            merge_edges(
                nb,
                sim,
                best[lo:hi].reshape(-1).astype(np.int64),
                np.repeat(active[lo:hi], graph.k),
                best_sims[lo:hi].reshape(-1),
            )
        # NN-descent's rule: a row whose list did not change has nothing new to join next.
        active = active[changed]
        if active.size == 0:
            break
    return KnnGraph(nb, sim)


def walk_ranks(graph: KnnGraph) -> IdArray | None:
    """(N,) each node's place in a depth-first walk of `graph` (to its nearest unvisited
    neighbour first), for `join_rows(ranks=...)`; None without numba, whose numpy pass
    gathers by blocks and gains nothing from an order (1M: 0.3 s)."""
    if not numba_enabled() or graph.k == 0:
        return None
    ranks: IdArray = join_kernels().walk_ranks(graph.neighbors)
    return ranks


def lists_of(
    graph: KnnGraph, in_place: bool
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """`graph`'s neighbour and similarity arrays to write into: its own (in_place) or copies."""
    if in_place:
        return graph.neighbors, graph.similarities
    return graph.neighbors.copy(), graph.similarities.copy()


def _join_pass_compiled(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    active: IdArray,
    picks: IdArray,
    visit: IdArray,
    expand: int,
    current: bool,
    previous: npt.NDArray[np.int32],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """`_join_pass_numpy`'s twin: the kernel over slices of `visit` (the order in which the
    rows are rebuilt), on threads; each row's results land at its place in `active`."""
    k = nb.shape[1]
    best = np.empty((active.size, k), dtype=np.int32)
    best_sims = np.empty((active.size, k), dtype=np.float32)
    changed = np.empty(active.size, dtype=np.bool_)
    join = join_kernels().join_rows_pass

    def run(lo: int, hi: int) -> None:
        join(
            nb,
            sim,
            vectors,
            active,
            picks,
            visit[lo:hi],
            expand,
            current,
            previous,
            best,
            best_sims,
            changed,
        )

    _split(active.size, run)
    return best, best_sims, changed


def _join_pass_numpy(
    nb: npt.NDArray[np.int32],
    current: npt.NDArray[np.float32] | None,
    vectors: npt.NDArray[np.floating],
    active: IdArray,
    picks: IdArray,
    expand: int,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """One pass of the join, block by block: (rows' new neighbours, their similarities, whether
    each row's set changed). Reads `nb` only, and `current` (the graph's similarities, when
    they are the current cosines) for the rows' own entries."""
    k = nb.shape[1]
    width = k + expand * k + picks.shape[1]
    step = max(1, _BLOCK_BYTES // (width * vectors.shape[1] * 4))
    best = np.empty((active.size, k), dtype=np.int32)
    best_sims = np.empty((active.size, k), dtype=np.float32)
    changed = np.zeros(active.size, dtype=np.bool_)
    for start in range(0, active.size, step):
        part = slice(start, start + step)
        block = active[part]
        cand = _candidates(nb, block, picks[part], expand)  # (B, width)
        sims = _similarities(vectors, block, cand)
        if current is not None:  # the rows' own entries, first in `cand`, as stored
            sims[:, :k] = np.where(nb[block] >= 0, current[block], -np.inf)
        best[part], best_sims[part] = best_distinct(block, cand, sims, k)
        changed[part] = (np.sort(best[part], axis=1) != np.sort(nb[block], axis=1)).any(1)
    return best, best_sims, changed


def merge_edges(
    neighbors: npt.NDArray[np.int32],
    similarities: npt.NDArray[np.float32],
    dst: IdArray,
    src: IdArray,
    sims: npt.NDArray[np.float32],
) -> None:
    """In place: offer edge dst -> src (similarity sims) to row dst; each row keeps its k best
    distinct entries, sorted. Any number of offers per row (unlike core.repair's one).
    Compiled when numba is enabled, else numpy; the same rows."""
    if numba_enabled():
        join_kernels().merge_edges(
            neighbors,
            similarities,
            dst.astype(np.int64, copy=False),
            src.astype(np.int64, copy=False),
            sims.astype(np.float32, copy=False),
        )
        return
    _merge_edges_numpy(neighbors, similarities, dst, src, sims)


def _merge_edges_numpy(
    neighbors: npt.NDArray[np.int32],
    similarities: npt.NDArray[np.float32],
    dst: IdArray,
    src: IdArray,
    sims: npt.NDArray[np.float32],
) -> None:
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


def _candidates(nb: npt.NDArray[np.int32], block: IdArray, picks: IdArray, expand: int) -> IdArray:
    """(B, k + expand k + r): each row's neighbours, the rows of its first `expand` ones (-1
    where padding) and random picks."""
    own = nb[block].astype(np.int64)  # (B, k)
    first = own[:, :expand]  # (B, e)
    second = nb[np.where(first >= 0, first, 0)].astype(np.int64)  # (B, e, k)
    second[first < 0] = NO_NEIGHBOR
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


def best_distinct(
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


def _split(count: int, run: Callable[[int, int], _T]) -> list[_T]:
    """run(lo, hi) over contiguous slices of range(count), on threads when it is large; the
    results in slice order."""
    parts = _THREADS if count >= _THREAD_MIN_ROWS else 1
    bounds = [count * i // parts for i in range(parts + 1)]
    if parts == 1:
        return [run(0, count)]
    with ThreadPoolExecutor(parts) as pool:
        return list(pool.map(run, bounds[:-1], bounds[1:]))


def _sort_rows(nb: npt.NDArray[np.int32], sim: npt.NDArray[np.float32], rows: IdArray) -> None:
    """In place: rows best first, padding last."""
    key = np.where(nb[rows] == NO_NEIGHBOR, np.inf, -sim[rows])
    order = np.argsort(key, axis=1, kind="stable")
    nb[rows] = np.take_along_axis(nb[rows], order, axis=1)
    sim[rows] = np.take_along_axis(sim[rows], order, axis=1)

"""The greedy loops compiled with numba: imported only through `acceleration.kernels()`.

Each kernel is the compiled twin of a pure numpy / Python function named in its docstring and
returns the same result bit for bit (tests run both): the same float operations in the same
order, and the same tie rule (a higher score first, then the lower id). They exist because a
greedy pick depends on every pick before it, which no vectorised numpy expression can express,
and a Python loop pays about a microsecond per step (benchmarks/selection_numba.py measures
both).

Heaps here are binary min-heaps over parallel arrays (keys, ids), ordered by (key, id): keys
are negated scores, so the top is the highest score and, among equal scores, the lowest id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    # cache=True: the machine code is written next to this file (or to NUMBA_CACHE_DIR, or a
    # user cache folder), so the JIT is paid once per install, not once per process. nogil: the
    # service runs rounds in a worker thread; the event loop keeps serving while a kernel runs.
    try:
        return cast(_F, numba.njit(cache=True, nogil=True)(fn))
    except RuntimeError:
        # numba found no writable cache folder (a read-only image without a home): compile in
        # every process rather than fail the round.
        return cast(_F, numba.njit(nogil=True)(fn))


@_jit
def _before(key_a: float, id_a: int, key_b: float, id_b: int) -> bool:
    return key_a < key_b or (key_a == key_b and id_a < id_b)


@_jit
def _sift_down(
    keys: npt.NDArray[np.float64], ids: npt.NDArray[np.int64], pos: int, size: int
) -> None:
    key, item = keys[pos], ids[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _before(keys[right], ids[right], keys[child], ids[child]):
            child = right
        if not _before(keys[child], ids[child], key, item):
            break
        keys[pos], ids[pos] = keys[child], ids[child]
        pos = child
    keys[pos], ids[pos] = key, item


@_jit
def _heapify(keys: npt.NDArray[np.float64], ids: npt.NDArray[np.int64]) -> None:
    size = keys.shape[0]
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(keys, ids, pos, size)


@_jit
def pick_with_down_weighting(
    neighbors: npt.NDArray[np.int32],
    push_weights: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    budget: int,
) -> npt.NDArray[np.int64]:
    """Twin of `message_passing._pick_with_down_weighting_python`: the same picks in order."""
    k = neighbors.shape[1]
    negated = -scores  # the current -g of every sample
    ids = np.flatnonzero(eligible).astype(np.int64)
    keys = negated[ids]
    size = ids.shape[0]
    _heapify(keys, ids)
    picks = np.empty(budget, dtype=np.int64)
    taken = 0
    while taken < budget:
        key, i = keys[0], ids[0]
        if key != negated[i]:
            # Stale: its score fell since it entered. Re-key it in place (a pop and a push).
            keys[0] = negated[i]
            _sift_down(keys, ids, 0, size)
            continue
        size -= 1
        keys[0], ids[0] = keys[size], ids[size]
        _sift_down(keys, ids, 0, size)
        picks[taken] = i
        taken += 1
        score = -key
        if score > 0:
            for t in range(k):
                j = neighbors[i, t]
                if j != -1:
                    negated[j] += push_weights[i, t] * score
    return picks


@_jit
def _row_gain(
    indptr: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int32],
    vals: npt.NDArray[np.float32],
    cover: npt.NDArray[np.float32],
    row: int,
) -> float:
    # float32 differences summed in float64 in row order: what `facility_location._gains`
    # computes with np.bincount.
    gain = 0.0
    for p in range(indptr[row], indptr[row + 1]):
        lift = vals[p] - cover[cols[p]]
        if lift > 0:
            gain += lift
    return gain


@_jit
def lazy_greedy_facility_location(
    indptr: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int32],
    vals: npt.NDArray[np.float32],
    bonus: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    budget: int,
) -> npt.NDArray[np.int64]:
    """Twin of `facility_location._lazy_greedy_python`: exact greedy by a lazy heap."""
    n = indptr.shape[0] - 1
    cover = np.zeros(n, dtype=np.float32)
    ids = np.flatnonzero(eligible).astype(np.int64)
    size = ids.shape[0]
    keys = np.empty(size, dtype=np.float64)
    for pos in range(size):
        keys[pos] = -(_row_gain(indptr, cols, vals, cover, ids[pos]) + bonus[ids[pos]])
    _heapify(keys, ids)
    # evaluated_at[c] == taken: c's key is its exact gain against the current cover.
    evaluated_at = np.full(n, -1, dtype=np.int64)
    evaluated_at[ids] = 0
    picks = np.empty(budget, dtype=np.int64)
    taken = 0
    while taken < budget:
        c = ids[0]
        if evaluated_at[c] != taken:
            keys[0] = -(_row_gain(indptr, cols, vals, cover, c) + bonus[c])
            evaluated_at[c] = taken
            _sift_down(keys, ids, 0, size)
            continue
        size -= 1
        keys[0], ids[0] = keys[size], ids[size]
        _sift_down(keys, ids, 0, size)
        picks[taken] = c
        taken += 1
        for p in range(indptr[c], indptr[c + 1]):
            if vals[p] > cover[cols[p]]:
                cover[cols[p]] = vals[p]
    return picks


@_jit
def build_sparse_similarity(
    nb: npt.NDArray[np.int32], sim: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Twin of `similarity._build_sparse_similarity_numpy`: the same (indptr, cols, vals)."""
    n, k = nb.shape
    keep = np.zeros((n, k), dtype=np.bool_)
    kept = np.full((n, k), -1, dtype=np.int32)  # nb where kept: one random row read per edge below
    for i in range(n):
        for t in range(k):
            j = nb[i, t]
            if j == -1 or j == i or not sim[i, t] > 0:
                continue
            repeated = False
            for u in range(t):  # any earlier listing, kept or not, wins
                if nb[i, u] == j:
                    repeated = True
                    break
            if not repeated:
                keep[i, t] = True
                kept[i, t] = j
    out_count = np.zeros(n, dtype=np.int64)
    in_count = np.zeros(n, dtype=np.int64)
    one_way = np.zeros((n, k), dtype=np.bool_)
    for i in range(n):
        for t in range(k):
            if not keep[i, t]:
                continue
            out_count[i] += 1
            j = nb[i, t]
            mutual = False
            for u in range(k):
                if kept[j, u] == i:
                    mutual = True
                    break
            if not mutual:
                one_way[i, t] = True
                in_count[j] += 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        indptr[i + 1] = indptr[i] + out_count[i] + in_count[i] + 1
    cols = np.empty(indptr[n], dtype=np.int32)
    vals = np.empty(indptr[n], dtype=np.float32)
    # Row layout: [self, kept out-edges in list order, reversed one-way in-edges by source].
    filled = np.zeros(n, dtype=np.int64)
    for i in range(n):
        p = indptr[i]
        cols[p] = i
        vals[p] = 1.0
        for t in range(k):
            if keep[i, t]:
                p += 1
                cols[p] = nb[i, t]
                vals[p] = sim[i, t]
    for i in range(n):  # sources ascending, then slots: the numpy path's stable sort
        for t in range(k):
            if one_way[i, t]:
                j = nb[i, t]
                p = indptr[j] + 1 + out_count[j] + filled[j]
                cols[p] = i
                vals[p] = sim[i, t]
                filled[j] += 1
    return indptr, cols, vals


@_jit
def coverage_owner(
    nb: npt.NDArray[np.int32], sim: npt.NDArray[np.float32], picks: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Twin of `weights._coverage_owner_numpy`: each sample's most similar pick over either
    edge direction (the lower pick id among equals), the pick itself for a pick, n for none."""
    n, k = nb.shape
    selected = np.zeros(n, dtype=np.bool_)
    for p in picks:
        selected[p] = True
    best = np.full(n, -np.inf, dtype=np.float64)
    owner = np.full(n, n, dtype=np.int64)
    # A NaN similarity makes the numpy path's maximum NaN, which nothing equals: no owner.
    poisoned = np.zeros(n, dtype=np.bool_)
    for i in range(n):  # sample i lists pick j
        for t in range(k):
            j = nb[i, t]
            if j != -1 and selected[j]:
                s = np.float64(sim[i, t])
                if s != s:
                    poisoned[i] = True
                elif s > best[i] or (s == best[i] and j < owner[i]):
                    best[i], owner[i] = s, j
    for p in picks:  # pick p lists sample i
        for t in range(k):
            i = nb[p, t]
            if i != -1:
                s = np.float64(sim[p, t])
                if s != s:
                    poisoned[i] = True
                elif s > best[i] or (s == best[i] and p < owner[i]):
                    best[i], owner[i] = s, p
    for i in range(n):
        if poisoned[i]:
            owner[i] = n
    for p in picks:
        owner[p] = p
    return owner


# -- local joins (core.descent) --------------------------------------------------------------
#
# These gather rows of the (N, d) unit vectors and take dot products: the dot is summed with
# reassociation allowed (so LLVM vectorises it), which rounds differently from numpy's BLAS
# and einsum in the last bits. The twins therefore agree on the graph, and on its similarities
# up to float32 rounding, not bit for bit; a pick differs only where two candidates' cosines
# tie to within that rounding.


def _jit_dot(fn: _F) -> _F:
    flags = {"reassoc", "contract"}  # no 'nnan'/'ninf': the kernels compare against -inf
    try:
        return cast(_F, numba.njit(cache=True, nogil=True, fastmath=flags)(fn))
    except RuntimeError:
        return cast(_F, numba.njit(nogil=True, fastmath=flags)(fn))


@_jit_dot
def _dot(vectors: npt.NDArray[np.float32], a: int, b: int) -> np.float32:
    acc = np.float32(0.0)
    for j in range(vectors.shape[1]):
        acc += vectors[a, j] * vectors[b, j]
    return acc


@_jit
def _ranks_before(sim_a: float, id_a: int, sim_b: float, id_b: int) -> bool:
    # Best first: the higher similarity, then the lower id.
    return sim_a > sim_b or (sim_a == sim_b and id_a < id_b)


@_jit
def _keep_best(
    ids: npt.NDArray[np.int64],
    sims: npt.NDArray[np.float32],
    count: int,
    candidate: int,
    sim: float,
) -> int:
    """Offer (candidate, sim) to the sorted top list ids[:count] of capacity ids.size; returns
    the new count. The caller guarantees the candidate is not in the list yet."""
    size = ids.shape[0]
    if count == size:
        if not _ranks_before(sim, candidate, sims[size - 1], ids[size - 1]):
            return count
        pos = size - 1
    else:
        pos = count
        count += 1
    while pos > 0 and _ranks_before(sim, candidate, sims[pos - 1], ids[pos - 1]):
        ids[pos], sims[pos] = ids[pos - 1], sims[pos - 1]
        pos -= 1
    ids[pos], sims[pos] = candidate, sim
    return count


@_jit_dot
def _dots8(
    vectors: npt.NDArray[np.float32],
    u: int,
    cand: npt.NDArray[np.int64],
    start: int,
    count: int,
    out: npt.NDArray[np.float32],
) -> None:
    """out[:8] = cosines of u with cand[start:start + 8] (u itself past `count`). Eight rows
    read side by side: a gathered row is a cache miss, and eight of them overlap (measured
    here: 74 ns a dot against 158 ns one at a time, 1M x 384)."""
    ids = np.empty(8, dtype=np.int64)
    for i in range(8):
        ids[i] = cand[start + i] if start + i < count else u
    q = vectors[u]
    r0, r1, r2, r3 = vectors[ids[0]], vectors[ids[1]], vectors[ids[2]], vectors[ids[3]]
    r4, r5, r6, r7 = vectors[ids[4]], vectors[ids[5]], vectors[ids[6]], vectors[ids[7]]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    for j in range(q.shape[0]):
        x = q[j]
        a0 += x * r0[j]
        a1 += x * r1[j]
        a2 += x * r2[j]
        a3 += x * r3[j]
        a4 += x * r4[j]
        a5 += x * r5[j]
        a6 += x * r6[j]
        a7 += x * r7[j]
    out[0], out[1], out[2], out[3] = a0, a1, a2, a3
    out[4], out[5], out[6], out[7] = a4, a5, a6, a7


@_jit
def _lists(nb: npt.NDArray[np.int32], row: int, width: int, item: int) -> bool:
    """Whether nb[row, :width] holds item."""
    t = 0
    while t < width and nb[row, t] != item:
        t += 1
    return t < width


@_jit_dot
def join_rows_pass(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    picks: npt.NDArray[np.int64],
    expand: int,
    previous: npt.NDArray[np.int32],
    out_nb: npt.NDArray[np.int32],
    out_sim: npt.NDArray[np.float32],
    changed: npt.NDArray[np.bool_],
) -> None:
    """Twin of one pass of `descent._join_pass_numpy`: each of `rows` rebuilt from its row,
    the rows of its first `expand` neighbours and its random `picks`; reads nb / sim only,
    writes out_nb / out_sim / changed (row p of each belongs to rows[p]).

    Every distinct candidate is scored once. previous: (N, k) the graph the last pass read,
    or (0, k) on a first pass. After a pass every row it rebuilt holds current similarities
    and the best of all it compared, so a later pass takes a row's own entries as they are
    and skips a neighbour's entry that neighbour already listed last pass, when it listed the
    neighbour too: the last pass scored that pair (NN-descent's new / old flags). That skips
    about half of a second pass's dot products and changes no row."""
    n, k = nb.shape
    later = previous.shape[0] > 0
    seen = np.full(n, -1, dtype=np.int64)  # seen[c] == p: c is a candidate of rows[p]
    cand = np.empty(k + k * k + picks.shape[1], dtype=np.int64)
    sims8 = np.empty(8, dtype=np.float32)
    best_ids = np.empty(k, dtype=np.int64)
    best_sims = np.empty(k, dtype=np.float32)
    for p in range(rows.shape[0]):
        u = rows[p]
        seen[u] = p  # never its own neighbour
        m = 0
        count = 0
        for t in range(k):
            c = nb[u, t]
            if c >= 0 and seen[c] != p:
                seen[c] = p
                if later:
                    count = _keep_best(best_ids, best_sims, count, c, sim[u, t])
                else:
                    cand[m] = c
                    m += 1
        for t in range(min(expand, k)):
            c = nb[u, t]
            if c < 0:
                continue
            expanded_before = later and _lists(previous, u, min(expand, k), c)
            for t2 in range(k):
                c2 = nb[c, t2]
                if c2 < 0 or seen[c2] == p:
                    continue
                if expanded_before and _lists(previous, c, k, c2):
                    continue
                seen[c2] = p
                cand[m] = c2
                m += 1
        for t in range(picks.shape[1]):
            c = picks[p, t]
            if c >= 0 and seen[c] != p:
                seen[c] = p
                cand[m] = c
                m += 1
        for g in range(0, m, 8):
            _dots8(vectors, u, cand, g, m, sims8)
            for i in range(min(8, m - g)):
                count = _keep_best(best_ids, best_sims, count, cand[g + i], sims8[i])
        differs = False
        for t in range(k):
            if t < count:
                out_nb[p, t] = best_ids[t]
                out_sim[p, t] = best_sims[t]
            else:
                out_nb[p, t] = -1
                out_sim[p, t] = 0.0
            differs = differs or not _lists(nb, u, k, out_nb[p, t])
        changed[p] = differs


@_jit
def merge_edges(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    dst: npt.NDArray[np.int64],
    src: npt.NDArray[np.int64],
    sims: npt.NDArray[np.float32],
) -> None:
    """Twin of `descent._merge_edges_numpy`, in place: each offer dst -> src enters row dst
    when it beats the row's weakest entry (padding: always) and src is not listed there."""
    k = nb.shape[1]
    if k == 0:
        return
    for e in range(dst.shape[0]):
        v, u, s = dst[e], src[e], sims[e]
        if v < 0 or u < 0 or v == u:
            continue
        if nb[v, k - 1] >= 0 and not s > sim[v, k - 1]:
            continue
        listed = False
        for t in range(k):
            if nb[v, t] == u:
                listed = True
                break
        if listed:
            continue
        pos = k - 1
        while pos > 0 and (
            nb[v, pos - 1] < 0 or _ranks_before(s, u, sim[v, pos - 1], nb[v, pos - 1])
        ):
            nb[v, pos], sim[v, pos] = nb[v, pos - 1], sim[v, pos - 1]
            pos -= 1
        nb[v, pos], sim[v, pos] = u, s


@_jit_dot
def rescore_edges(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    moved: npt.NDArray[np.bool_],
    lo: int,
    hi: int,
) -> int:
    """Twin of `descent._rescore_edges_numpy` over rows lo..hi-1, in place: every edge naming
    a moved node gets its cosine recomputed, and those rows are re-sorted (stable: best first,
    padding last). Returns how many rows held such an edge."""
    k = nb.shape[1]
    touched = 0
    for i in range(lo, hi):
        hit = False
        for t in range(k):
            j = nb[i, t]
            if j >= 0 and moved[j]:
                sim[i, t] = _dot(vectors, i, j)
                hit = True
        if not hit:
            continue
        touched += 1
        for t in range(1, k):  # insertion sort, stable
            j, s = nb[i, t], sim[i, t]
            if j < 0:
                continue
            pos = t
            while pos > 0 and (nb[i, pos - 1] < 0 or sim[i, pos - 1] < s):
                nb[i, pos], sim[i, pos] = nb[i, pos - 1], sim[i, pos - 1]
                pos -= 1
            nb[i, pos], sim[i, pos] = j, s
    return touched

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


def compiled(fn: _F) -> _F:
    # cache=True: the machine code is written next to this file (or to NUMBA_CACHE_DIR, or a
    # user cache folder), so the JIT is paid once per install, not once per process. nogil: the
    # service runs rounds in a worker thread; the event loop keeps serving while a kernel runs.
    try:
        return cast(_F, numba.njit(cache=True, nogil=True)(fn))
    except RuntimeError:
        # numba found no writable cache folder (a read-only image without a home): compile in
        # every process rather than fail the round.
        return cast(_F, numba.njit(nogil=True)(fn))


@compiled
def _before(key_a: float, id_a: int, key_b: float, id_b: int) -> bool:
    return key_a < key_b or (key_a == key_b and id_a < id_b)


@compiled
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


@compiled
def _heapify(keys: npt.NDArray[np.float64], ids: npt.NDArray[np.int64]) -> None:
    size = keys.shape[0]
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(keys, ids, pos, size)


@compiled
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


@compiled
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


@compiled
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


@compiled
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


@compiled
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

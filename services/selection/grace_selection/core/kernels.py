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
def _span_gain(
    cols: npt.NDArray[np.int32],
    vals: npt.NDArray[np.float32],
    cover: npt.NDArray[np.float32],
    start: int,
    stop: int,
) -> float:
    # float32 differences summed in float64 in row order: what `facility_location._gains`
    # computes with np.bincount.
    gain = 0.0
    for p in range(start, stop):
        lift = vals[p] - cover[cols[p]]
        if lift > 0:
            gain += lift
    return gain


# The lazy greedy's queue entries hold all a re-evaluation reads but the CSR row, so that it
# reads no per-sample array at random: reals (key, bonus), integers (id, evaluated at, row
# start, row stop). A bucket lists its entries in blocks of CHUNK.
KEY, BONUS = 0, 1
ID, STAMP, START, STOP = 0, 1, 2, 3
CHUNK = 16
# Buckets over the range of keys. A re-evaluated sample usually falls below nearly every other
# key (at N = 1M, 94% of 2.7M re-evaluations sank to the last two levels of a 4-ary heap): a
# heap of all N paid ~10 cache-missing levels each time, a bucket push costs O(1) and only the
# current bucket is a heap, small enough to stay in cache. 2^12 or 2^18 buckets were slower.
BUCKETS = 1 << 16


@compiled
def _bucket(key: float, low: float, scale: float, count: int) -> int:
    # Monotone in key (a rounded difference and a product by scale >= 0 are), so a lower bucket
    # never holds a higher key; the comparisons also send NaN to bucket 0 and clamp the ends.
    x = (key - low) * scale
    if not x > 0.0:
        return 0
    if x >= count:
        return count - 1
    return int(x)


@compiled
def _move(reals: npt.NDArray[np.float64], ints: npt.NDArray[np.int64], dst: int, src: int) -> None:
    # Field by field: numba compiles a row assignment (reals[dst] = reals[src]) to a slower loop.
    reals[dst, KEY], reals[dst, BONUS] = reals[src, KEY], reals[src, BONUS]
    ints[dst, ID], ints[dst, STAMP] = ints[src, ID], ints[src, STAMP]
    ints[dst, START], ints[dst, STOP] = ints[src, START], ints[src, STOP]


@compiled
def _sift_entry(
    reals: npt.NDArray[np.float64], ints: npt.NDArray[np.int64], pos: int, size: int
) -> None:
    # _sift_down over queue entries, ordered by (key, id).
    key, bonus = reals[pos, KEY], reals[pos, BONUS]
    item, stamp, start, stop = ints[pos, ID], ints[pos, STAMP], ints[pos, START], ints[pos, STOP]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _before(
            reals[right, KEY], ints[right, ID], reals[child, KEY], ints[child, ID]
        ):
            child = right
        if not _before(reals[child, KEY], ints[child, ID], key, item):
            break
        _move(reals, ints, pos, child)
        pos = child
    reals[pos, KEY], reals[pos, BONUS] = key, bonus
    ints[pos, ID], ints[pos, STAMP], ints[pos, START], ints[pos, STOP] = item, stamp, start, stop


@compiled
def _push_entry(
    block_reals: npt.NDArray[np.float64],
    block_ints: npt.NDArray[np.int64],
    chain: npt.NDArray[np.int64],
    head: npt.NDArray[np.int64],
    fill: npt.NDArray[np.int64],
    spare: npt.NDArray[np.int64],
    bucket: int,
    reals: npt.NDArray[np.float64],
    ints: npt.NDArray[np.int64],
) -> None:
    # A bucket is a chain of blocks, newest first: head[b] is its newest block, fill[b] the
    # entries in it. spare[0] is the first free block: one never used (chain == -2: the pool
    # grows) or one a drain gave back (chain links the free list).
    m = head[bucket]
    if m == -1 or fill[bucket] == CHUNK:
        block = spare[0]
        spare[0] = block + 1 if chain[block] == -2 else chain[block]
        chain[block] = m
        head[bucket] = block
        fill[bucket] = 0
        m = block
    f = fill[bucket]
    block_reals[m, f, KEY], block_reals[m, f, BONUS] = reals[KEY], reals[BONUS]
    block_ints[m, f, ID], block_ints[m, f, STAMP] = ints[ID], ints[STAMP]
    block_ints[m, f, START], block_ints[m, f, STOP] = ints[START], ints[STOP]
    fill[bucket] = f + 1


@compiled
def lazy_greedy_facility_location(
    indptr: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int32],
    vals: npt.NDArray[np.float32],
    bonus: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    budget: int,
    buckets: int,
) -> npt.NDArray[np.int64]:
    """Twin of `facility_location._lazy_greedy_python`: exact greedy by a lazy priority queue.

    The queue orders entries by (key, id) as the heapq does, so its top, and with it every
    re-evaluation and pick, is the heapq's. Keys only rise (a gain never grows as the cover
    does), which makes a bucket queue exact: `buckets` buckets split the range of keys, a key
    above the current bucket waits in its bucket's list, and the lowest non-empty bucket is
    drained into a binary heap, which alone orders keys of one bucket.
    """
    n = indptr.shape[0] - 1
    items = np.flatnonzero(eligible).astype(np.int64)
    size = items.shape[0]
    if budget > size:
        raise ValueError("budget exceeds the eligible samples")
    cover = np.zeros(n, dtype=np.float32)
    first = np.empty(size, dtype=np.float64)
    low, high = np.inf, -np.inf
    for j in range(size):
        c = items[j]
        first[j] = -(_span_gain(cols, vals, cover, indptr[c], indptr[c + 1]) + bonus[c])
        # A key never exceeds -bonus (a gain of 0): the top of the range.
        low, high = min(low, first[j]), max(high, first[j], -bonus[c])
    scale = buckets / (high - low) if high > low else 0.0
    blocks = size // CHUNK + buckets + 1  # every entry in a full block, plus one part-full each
    block_reals = np.empty((blocks, CHUNK, 2), dtype=np.float64)
    block_ints = np.empty((blocks, CHUNK, 4), dtype=np.int64)
    chain = np.full(blocks, -2, dtype=np.int64)
    head = np.full(buckets, -1, dtype=np.int64)
    fill = np.zeros(buckets, dtype=np.int64)
    spare = np.zeros(1, dtype=np.int64)
    # The heap of the current bucket; np.empty touches no memory, and a bucket's heap stays
    # small, so these cost only the pages it uses (each new page is a fault, ~5 us here).
    reals = np.empty((max(size, 1), 2), dtype=np.float64)
    ints = np.empty((max(size, 1), 4), dtype=np.int64)
    for j in range(size):
        c = items[j]
        reals[0, KEY], reals[0, BONUS] = first[j], bonus[c]
        ints[0, ID], ints[0, STAMP], ints[0, START], ints[0, STOP] = c, 0, indptr[c], indptr[c + 1]
        bucket = _bucket(first[j], low, scale, buckets)
        _push_entry(block_reals, block_ints, chain, head, fill, spare, bucket, reals[0], ints[0])
    heap_size = 0
    current = -1
    picks = np.empty(budget, dtype=np.int64)
    taken = 0
    while taken < budget:
        if heap_size == 0:  # drain the next non-empty bucket into the heap
            current += 1
            while head[current] == -1:
                current += 1
            m, f = head[current], fill[current]
            while m != -1:
                reals[heap_size : heap_size + f] = block_reals[m, :f]
                ints[heap_size : heap_size + f] = block_ints[m, :f]
                heap_size += f
                after = chain[m]
                chain[m] = spare[0]  # the drained block joins the free list
                spare[0] = m
                m, f = after, CHUNK
            head[current] = -1
            for pos in range(heap_size // 2 - 1, -1, -1):
                _sift_entry(reals, ints, pos, heap_size)
        if ints[0, STAMP] != taken:  # stale: re-evaluate against the current cover
            gain = _span_gain(cols, vals, cover, ints[0, START], ints[0, STOP])
            reals[0, KEY] = -(gain + reals[0, BONUS])
            ints[0, STAMP] = taken
            bucket = _bucket(reals[0, KEY], low, scale, buckets)
            if bucket > current:  # it leaves the heap for its bucket
                _push_entry(
                    block_reals, block_ints, chain, head, fill, spare, bucket, reals[0], ints[0]
                )
                heap_size -= 1
                _move(reals, ints, 0, heap_size)
            _sift_entry(reals, ints, 0, heap_size)
            continue
        c, start, stop = ints[0, ID], ints[0, START], ints[0, STOP]
        heap_size -= 1
        _move(reals, ints, 0, heap_size)
        _sift_entry(reals, ints, 0, heap_size)
        picks[taken] = c
        taken += 1
        for p in range(start, stop):
            if vals[p] > cover[cols[p]]:
                cover[cols[p]] = vals[p]
    return picks


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

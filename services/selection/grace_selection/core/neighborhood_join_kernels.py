"""The neighbourhood join of `core.neighborhood_join` compiled with numba: imported only
through `acceleration.neighborhood_join_kernels()`. Each function is the compiled twin of the
numpy path named there (tests run both)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.join_kernels import _jit_dot, offer_edge, widen_row
from grace_selection.core.kernels import compiled


@compiled
def reverse_lists(nb: npt.NDArray[np.int32], width: int) -> npt.NDArray[np.int32]:
    """Twin of `neighborhood_join._reverse_lists_numpy`: (N, width) for each node the nodes
    that list it, those that list it nearer first (then by id); -1 pads."""
    n, k = nb.shape
    rev = np.full((n, width), -1, dtype=np.int32)
    count = np.zeros(n, dtype=np.int64)
    for t in range(k):
        for u in range(n):
            v = nb[u, t]
            if v >= 0 and count[v] < width:
                rev[v, count[v]] = u
                count[v] += 1
    return rev


@_jit_dot
def _dot_rows(rows: npt.NDArray[np.float32], a: int, b: int) -> np.float32:
    acc = np.float32(0.0)
    for j in range(rows.shape[1]):
        acc += rows[a, j] * rows[b, j]
    return acc


@_jit_dot
def neighborhood_offers(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    worst: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32 | np.uint16],
    rev: npt.NDArray[np.int32],
    nodes: npt.NDArray[np.int64],
    lo: int,
    hi: int,
    listed: int,
    focus: npt.NDArray[np.bool_],
    out_dst: npt.NDArray[np.int32],
    out_src: npt.NDArray[np.int32],
    out_sim: npt.NDArray[np.float32],
) -> tuple[int, int]:
    """Twin of `neighborhood_join._offers_numpy` for nodes[lo:hi], in that order: the offers
    of each node's neighbourhood (its first `listed` neighbours and its reverse neighbours)
    written to out_*, those that beat the row's `worst` similarity. Reads nb / sim only.
    focus: (N,) only pairs with a focused end, or (0,) all pairs. Returns (the place in
    `nodes` where it stopped, the offers written): it stops before a node whose offers might
    not fit.

    The members' rows are copied side by side first: every pair then reads rows in the
    cache (measured, 30 members at d = 384: 6 us a node for the pairs in the cache, 16 us
    reading them from the matrix sixteen at a time)."""
    size = listed + rev.shape[1]
    members = np.empty(size, dtype=np.int64)
    member_sims = np.empty(size, dtype=np.float32)
    rows = np.empty((size + 1, vectors.shape[1]), dtype=np.float32)  # the members', then v's
    focused = focus.shape[0] > 0
    limit = out_dst.shape[0]
    m = 0
    for step in range(lo, hi):
        v = nodes[step]
        c = 0
        for t in range(listed):
            x = nb[v, t]
            if x >= 0:
                members[c], member_sims[c] = x, sim[v, t]
                c += 1
        forward = c
        for t in range(rev.shape[1]):
            x = rev[v, t]
            if x < 0:
                break
            known = False
            for q in range(forward):
                known = known or members[q] == x
            if not known:
                members[c] = x
                c += 1
        if m + (c + 1) * c > limit:
            return step, m
        own = not focused or focus[v]
        # v's own edges go back to the nodes it lists (their cosines are stored).
        for i in range(forward):
            x, s = members[i], member_sims[i]
            if (own or focus[x]) and s > worst[x]:
                out_dst[m], out_src[m], out_sim[m] = x, v, s
                m += 1
        for i in range(c):
            widen_row(vectors[members[i]], rows[i])
        widen_row(vectors[v], rows[size])
        # v's reverse neighbours are offered to v (they list v; v may not list them).
        for i in range(forward, c):
            x = members[i]
            if own or focus[x]:
                s = _dot_rows(rows, size, i)
                if s > worst[v]:
                    out_dst[m], out_src[m], out_sim[m] = v, x, s
                    m += 1
        # NN-descent's local join: every pair of v's neighbourhood, each way.
        for i in range(c - 1):
            a = members[i]
            whole = not focused or focus[a]
            for j in range(i + 1, c):
                b = members[j]
                if not (whole or focus[b]):
                    continue
                s = _dot_rows(rows, i, j)
                if s > worst[a]:
                    out_dst[m], out_src[m], out_sim[m] = a, b, s
                    m += 1
                if s > worst[b]:
                    out_dst[m], out_src[m], out_sim[m] = b, a, s
                    m += 1
    return hi, m


@compiled
def merge_offers(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    dst: npt.NDArray[np.int32],
    src: npt.NDArray[np.int32],
    sims: npt.NDArray[np.float32],
    count: int,
    lo: int,
    hi: int,
) -> None:
    """The first `count` offers dst -> src whose row dst is in lo..hi-1, merged in place
    (`join_kernels.offer_edge`): threads that own disjoint ranges of rows merge one buffer
    side by side."""
    for e in range(count):
        v = dst[e]
        if lo <= v < hi:
            offer_edge(nb, sim, v, src[e], sims[e])

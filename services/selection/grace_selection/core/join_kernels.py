"""The graph-upkeep loops of `core.descent` compiled with numba: imported only through
`acceleration.join_kernels()`.

Local joins gather rows of the (N, d) unit vectors and take dot products; the greedy selection
loops live in `core.kernels`. Each function is the compiled twin of the numpy path named in
`core.descent` (tests run both).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any, TypeVar, cast

import llvmlite.binding
import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba.core import config, types
from numba.extending import intrinsic

from grace_selection.core.kernels import compiled

_F = TypeVar("_F", bound=Callable[..., Any])

# -- float16 vectors ----------------------------------------------------------------------
#
# numba has no float16 type on the CPU, so float16 vectors reach the kernels as their bits
# (a uint16 view) and every element read goes through `as_float32`: for uint16 it is LLVM's
# half-to-float extension, one instruction (vcvtph2ps, vectorised with the dot) on an x86 CPU
# with F16C and on any 64-bit ARM. Elsewhere LLVM would call a runtime helper that numba's
# JIT does not link (tried: NUMBA_CPU_NAME=generic crashes the process), so there the vectors
# take the numpy path instead (`HALF_FLOATS`).


def _half_floats_in_hardware() -> bool:
    cpu_name = getattr(config, "CPU_NAME", None)
    if cpu_name not in (None, "host"):  # compiled for a named CPU, not this one
        return "+f16c" in (getattr(config, "CPU_FEATURES", None) or "")
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    return bool(llvmlite.binding.get_host_cpu_features().get("f16c", False))


HALF_FLOATS = _half_floats_in_hardware()


def _as_float32_typing(typingctx: Any, value: Any) -> Any:
    if value == types.float32:
        return types.float32(value), lambda context, builder, sig, args: args[0]
    if value == types.uint16:

        def extend(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

        return types.float32(value), extend
    return None


# An element of the vectors as float32, inside a kernel: float32 as it is; uint16 (the bits of
# a float16) converted exactly.
as_float32 = cast(Callable[[Any], np.float32], intrinsic(_as_float32_typing))


@compiled
def widen_row(row: npt.NDArray[np.float32 | np.uint16], out: npt.NDArray[np.float32]) -> None:
    """out[:] = `row` as float32, element by element (a numba slice assignment goes through
    its general array copy: with this loop instead, the local join's pass over the 1M graph
    took 0.65x the time, docs/results/pass_join_notes.md)."""
    for j in range(row.shape[0]):
        out[j] = as_float32(row[j])


@compiled
def widen_rows(bits: npt.NDArray[np.uint16], out: npt.NDArray[np.float32]) -> None:
    """out[:] = the float16 rows whose bits are `bits`, as float32 (`core.recall`'s exact
    search: numpy's conversion of a 65,536-row block took 56-740 ms here, this 5-6 ms)."""
    for i in range(bits.shape[0]):
        widen_row(bits[i], out[i])


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
def _dot(vectors: npt.NDArray[np.float32 | np.uint16], a: int, b: int) -> np.float32:
    acc = np.float32(0.0)
    for j in range(vectors.shape[1]):
        acc += as_float32(vectors[a, j]) * as_float32(vectors[b, j])
    return acc


@compiled
def _ranks_before(sim_a: float, id_a: int, sim_b: float, id_b: int) -> bool:
    # Best first: the higher similarity, then the lower id.
    return sim_a > sim_b or (sim_a == sim_b and id_a < id_b)


@compiled
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
def _dots16(
    vectors: npt.NDArray[np.float32 | np.uint16],
    u: int,
    cand: npt.NDArray[np.int64],
    start: int,
    count: int,
    out: npt.NDArray[np.float32],
) -> None:
    """out[:16] = cosines of u with cand[start:start + 16] (u itself past `count`). Sixteen
    rows read side by side: a gathered row is a cache miss, and the reads overlap (measured
    side by side, 1M x 384, random rows: 89 ns a dot eight at a time, 76 ns sixteen at a
    time)."""
    ids = np.empty(16, dtype=np.int64)
    for i in range(16):
        ids[i] = cand[start + i] if start + i < count else u
    q = vectors[u]
    r0, r1, r2, r3 = vectors[ids[0]], vectors[ids[1]], vectors[ids[2]], vectors[ids[3]]
    r4, r5, r6, r7 = vectors[ids[4]], vectors[ids[5]], vectors[ids[6]], vectors[ids[7]]
    r8, r9, r10, r11 = vectors[ids[8]], vectors[ids[9]], vectors[ids[10]], vectors[ids[11]]
    r12, r13, r14, r15 = vectors[ids[12]], vectors[ids[13]], vectors[ids[14]], vectors[ids[15]]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = np.float32(0.0)
    for j in range(q.shape[0]):
        x = as_float32(q[j])
        a0 += x * as_float32(r0[j])
        a1 += x * as_float32(r1[j])
        a2 += x * as_float32(r2[j])
        a3 += x * as_float32(r3[j])
        a4 += x * as_float32(r4[j])
        a5 += x * as_float32(r5[j])
        a6 += x * as_float32(r6[j])
        a7 += x * as_float32(r7[j])
        b0 += x * as_float32(r8[j])
        b1 += x * as_float32(r9[j])
        b2 += x * as_float32(r10[j])
        b3 += x * as_float32(r11[j])
        b4 += x * as_float32(r12[j])
        b5 += x * as_float32(r13[j])
        b6 += x * as_float32(r14[j])
        b7 += x * as_float32(r15[j])
    out[0], out[1], out[2], out[3] = a0, a1, a2, a3
    out[4], out[5], out[6], out[7] = a4, a5, a6, a7
    out[8], out[9], out[10], out[11] = b0, b1, b2, b3
    out[12], out[13], out[14], out[15] = b4, b5, b6, b7


@compiled
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
    vectors: npt.NDArray[np.float32 | np.uint16],
    rows: npt.NDArray[np.int64],
    picks: npt.NDArray[np.int64],
    visit: npt.NDArray[np.int64],
    expand: int,
    current: bool,
    previous: npt.NDArray[np.int32],
    out_nb: npt.NDArray[np.int32],
    out_sim: npt.NDArray[np.float32],
    changed: npt.NDArray[np.bool_],
) -> None:
    """Twin of one pass of `descent._join_pass_numpy`: each of `rows` rebuilt from its row,
    the rows of its first `expand` neighbours and its random `picks`; reads nb / sim only,
    writes out_nb / out_sim / changed (row p of each belongs to rows[p]). visit: the places p
    to rebuild, in the order to rebuild them (any order gives the same rows; one that walks
    the graph reads overlapping neighbourhoods while they are in the cache). current: the
    rows' own similarities are the current cosines, so they are taken as they are, not
    recomputed.

    Every distinct candidate is scored once. previous: (N, k) the graph the last pass read,
    or (0, k) on a first pass. After a pass every row it rebuilt holds current similarities
    and the best of all it compared, so a later pass takes a row's own entries as they are
    and skips a neighbour's entry that neighbour already listed last pass, when it listed the
    neighbour too: the last pass scored that pair (NN-descent's new / old flags). That skips
    about half of a second pass's dot products and changes no row."""
    n, k = nb.shape
    later = previous.shape[0] > 0
    own_current = later or current
    seen = np.full(n, -1, dtype=np.int64)  # seen[c] == p: c is a candidate of rows[p]
    cand = np.empty(k + k * k + picks.shape[1], dtype=np.int64)
    sims16 = np.empty(16, dtype=np.float32)
    best_ids = np.empty(k, dtype=np.int64)
    best_sims = np.empty(k, dtype=np.float32)
    for step in range(visit.shape[0]):
        p = visit[step]
        u = rows[p]
        seen[u] = p  # never its own neighbour
        m = 0
        count = 0
        for t in range(k):
            c = nb[u, t]
            if c >= 0 and seen[c] != p:
                seen[c] = p
                if own_current:
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
        for g in range(0, m, 16):
            _dots16(vectors, u, cand, g, m, sims16)
            for i in range(min(16, m - g)):
                count = _keep_best(best_ids, best_sims, count, cand[g + i], sims16[i])
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


@compiled
def walk_ranks(nb: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:
    """Each node's place in a walk of the graph that steps to the nearest unvisited neighbour
    and backs off along its path when there is none (a depth-first walk): nodes close in the
    walk are close in the graph, so rows joined in this order read overlapping rows."""
    n, k = nb.shape
    rank = np.full(n, -1, dtype=np.int64)
    path = np.empty(n, dtype=np.int64)
    placed = 0
    for start in range(n):
        if rank[start] >= 0:
            continue
        rank[start] = placed
        placed += 1
        top = 0
        path[0] = start
        while top >= 0:
            u = path[top]
            step = -1
            for t in range(k):
                c = nb[u, t]
                if c >= 0 and rank[c] < 0:
                    step = c
                    break
            if step < 0:
                top -= 1
                continue
            rank[step] = placed
            placed += 1
            top += 1
            path[top] = step
    return rank


@compiled
def merge_edges(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    dst: npt.NDArray[np.int64],
    src: npt.NDArray[np.int64],
    sims: npt.NDArray[np.float32],
) -> None:
    """Twin of `descent._merge_edges_numpy`, in place: each offer dst -> src enters row dst
    when it beats the row's weakest entry (padding: always) and src is not listed there."""
    for e in range(dst.shape[0]):
        offer_edge(nb, sim, dst[e], src[e], sims[e])


@compiled
def offer_edge(
    nb: npt.NDArray[np.int32], sim: npt.NDArray[np.float32], v: int, u: int, s: float
) -> None:
    """Row v takes u (similarity s) when it beats the row's weakest entry (padding: always)
    and u is not listed there; the row stays sorted best first. The rows that result from
    a set of offers do not depend on their order, but for which of two offers of one pair
    (equal up to float32 rounding) is kept: the first."""
    k = nb.shape[1]
    if k == 0 or v < 0 or u < 0 or v == u:
        return
    if nb[v, k - 1] >= 0 and not s > sim[v, k - 1]:
        return
    for t in range(k):
        if nb[v, t] == u:
            return
    pos = k - 1
    while pos > 0 and (nb[v, pos - 1] < 0 or _ranks_before(s, u, sim[v, pos - 1], nb[v, pos - 1])):
        nb[v, pos], sim[v, pos] = nb[v, pos - 1], sim[v, pos - 1]
        pos -= 1
    nb[v, pos], sim[v, pos] = u, s


@_jit_dot
def rescore_edges(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32 | np.uint16],
    moved: npt.NDArray[np.bool_],
    lo: int,
    hi: int,
) -> int:
    """Twin of `descent._rescore_edges_numpy` over rows lo..hi-1, in place: every edge from or
    to a moved node gets its cosine recomputed, and those rows are re-sorted (stable: best
    first, padding last). Returns how many rows held such an edge."""
    k = nb.shape[1]
    touched = 0
    for i in range(lo, hi):
        hit = False
        for t in range(k):
            j = nb[i, t]
            if j >= 0 and (moved[i] or moved[j]):
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

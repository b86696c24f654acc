"""Neighbour means compiled with numba (`estimation.estimate_delta`, the neighbour sums of
`rescore.compute_rescore_priority`): imported only through `acceleration.estimation_kernels()`.

At N = 1M the numpy code builds several (N, k) float64 / intp temporaries and gathers at random;
one pass per row does the same work in about a tenth of the time. The results are numpy's bit
for bit (tests compare them): the same float64 operations per edge, and row sums in numpy's own
order (`_pairwise_sum`), so that both paths select the same coreset and plan the same rescore.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.kernels import compiled


@compiled
def _pairwise_sum(a: npt.NDArray[np.float64]) -> float:
    """a.sum() as numpy adds it up (pairwise_sum_DOUBLE), bit for bit, for up to 128 values
    (numpy's PW_BLOCKSIZE; beyond it numpy splits the run in two, and the caller keeps such
    rows on the numpy path so that this needs no recursion)."""
    n = a.shape[0]
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    r0, r1, r2, r3 = float(a[0]), float(a[1]), float(a[2]), float(a[3])
    r4, r5, r6, r7 = float(a[4]), float(a[5]), float(a[6]), float(a[7])
    i = 8
    while i < n - n % 8:
        r0, r1, r2, r3 = r0 + a[i], r1 + a[i + 1], r2 + a[i + 2], r3 + a[i + 3]
        r4, r5, r6, r7 = r4 + a[i + 4], r5 + a[i + 5], r6 + a[i + 6], r7 + a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for j in range(i, n):
        res += a[j]
    return res


@compiled
def estimate_delta(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    previous: npt.NDArray[np.float64],
    current: npt.NDArray[np.float64],
    fresh: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Twin of `estimation.estimate_delta`: previous + the weighted mean change of the fresh
    neighbours, per sample (previous where none moved)."""
    n, k = nb.shape
    moved = np.empty(n, dtype=np.bool_)
    change = np.zeros(n, dtype=np.float64)
    for j in range(n):
        moved[j] = fresh[j] and np.isfinite(previous[j])
        if moved[j]:
            change[j] = current[j] - previous[j]
    weights = np.empty(k, dtype=np.float64)
    moved_by = np.empty(k, dtype=np.float64)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        for t in range(k):
            j = nb[i, t]
            w = 0.0
            if j != -1:
                s = np.float64(sim[i, t])
                w = s if s >= 0.0 or s != s else 0.0  # np.maximum(s, 0.0): NaN stays
            else:
                j = 0  # padding reads row 0, as the numpy rule does; its weight is 0
            w = w * np.float64(moved[j])
            weights[t] = w
            moved_by[t] = w * change[j]
        total = _pairwise_sum(weights)
        shift = _pairwise_sum(moved_by)
        out[i] = previous[i] + (shift / total if total > 0 else 0.0)
    return out


@compiled
def neighbour_sums(
    nb: npt.NDArray[np.int32], values: npt.NDArray[np.float64], known: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Twin of the neighbour sum and count in `rescore.compute_rescore_priority`: per row, the
    sum of values over real neighbours that are known (0.0 in the other slots), and their count."""
    n, k = nb.shape
    row = np.empty(k, dtype=np.float64)
    total = np.empty(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for t in range(k):
            j = nb[i, t]
            row[t] = 0.0
            if j != -1 and known[j]:
                row[t] = values[j]
                count[i] += 1
        total[i] = _pairwise_sum(row)
    return total, count

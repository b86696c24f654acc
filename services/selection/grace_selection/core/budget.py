"""How many samples a round picks, how that budget splits over strata, and the argument checks
every selector shares."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from grace_selection.core.graph import KnnGraph


def budget_size(n: int, fraction: float) -> int:
    """The coreset size for N samples: round(fraction * N), halves rounded up, clamped to [1, N]."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return min(max(math.floor(fraction * n + 0.5), 1), n)


def split_budget(
    budget: int, sizes: npt.NDArray[np.int64], shares: Mapping[int, float] | None
) -> npt.NDArray[np.int64]:
    """Split `budget` picks over strata 0..S-1 holding `sizes[s]` samples each.

    shares None: proportional to the sizes. Otherwise proportional to `shares[s]`; a stratum
    missing from the map gets nothing, and a share whose stratum holds no samples is spread
    over the others (renormalised). Quotas are rounded by largest remainder (ties to the lower
    stratum id), no stratum gets more than it holds (the overflow goes to the others by the
    same rule), and when the budget allows it every stratum that has samples and a share gets
    at least one pick. Exact rational arithmetic keeps the split independent of float noise.
    Returns (S,) int64 summing to `budget`.
    """
    caps = [int(v) for v in np.asarray(sizes, dtype=np.int64)]
    if shares is None:
        weights = [Fraction(c) for c in caps]
    else:
        weights = [
            Fraction(shares.get(s, 0.0)) if caps[s] > 0 else Fraction(0) for s in range(len(caps))
        ]
    active = [s for s in range(len(caps)) if weights[s] > 0 and caps[s] > 0]
    capacity = sum(caps[s] for s in active)
    if capacity < budget:
        raise ValueError(
            f"stratum_budgets: the strata with a share hold {capacity} samples, fewer than the "
            f"budget {budget}; give shares to more strata or lower budget_fraction"
        )
    alloc = [0] * len(caps)
    remaining = budget
    open_ = active
    while remaining > 0:
        total = sum(weights[s] for s in open_)
        quotas = {s: remaining * weights[s] / total for s in open_}
        base = {s: math.floor(q) for s, q in quotas.items()}
        extra = remaining - sum(base.values())
        by_remainder = sorted(open_, key=lambda s: (-(quotas[s] - base[s]), s))
        for s in by_remainder[:extra]:
            base[s] += 1
        for s in open_:
            alloc[s] += min(base[s], caps[s] - alloc[s])
        remaining = budget - sum(alloc)
        # Each pass either places everything or fills at least one stratum, so this ends.
        open_ = [s for s in open_ if alloc[s] < caps[s]]
    if budget >= len(active):
        for s in active:
            if alloc[s] == 0:
                # Pigeonhole: some stratum holds >= 2 while one holds 0; take from the largest.
                donor = max(active, key=lambda d: (alloc[d], -d))
                alloc[donor] -= 1
                alloc[s] = 1
    return np.asarray(alloc, dtype=np.int64)


def check_selector_args(
    graph: KnnGraph,
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    budget: int,
) -> None:
    """Raise ValueError naming the argument at fault; selectors call this first."""
    n = graph.n
    if utility.shape != (n,):
        raise ValueError(f"utility must have shape ({n},) like the graph, got {utility.shape}")
    if not bool(np.isfinite(utility).all()):
        raise ValueError("utility must be finite; rank-normalise scores with combine_scores first")
    if eligible.shape != (n,) or eligible.dtype != np.bool_:
        raise ValueError(
            f"eligible must be a ({n},) bool mask, got {eligible.dtype} {eligible.shape}"
        )
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 0:
        raise ValueError(f"budget must be an integer >= 0, got {budget!r}")
    available = int(eligible.sum())
    if budget > available:
        raise ValueError(
            f"budget {budget} exceeds the {available} eligible samples; lower the budget or "
            "the noise guard fraction"
        )
    if not bool(np.isfinite(graph.similarities[graph.valid]).all()):
        raise ValueError("graph.similarities must be finite on every real edge")

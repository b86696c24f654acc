"""Stale-score estimation: guess the importance of samples not re-scored this round.

Each round only a share rho of the N samples is re-scored with the newest model (they are
*fresh*); the others keep a value from an older model (*stale*). A rule turns the previous
round's vector, the fresh values and the k-NN graph into a full (N,) vector. All rules share one
signature and are picked by name from `ESTIMATORS`, so a benchmark can compare them and a config
can name one.

Notation, for a stale sample i with neighbours j in its k-NN row:

- z_old_i: i's value in the previous round's vector (`previous`), measured or estimated;
- z_j: j's value now, the fresh score where j is fresh, else its previous value;
- w_ij = max(sim_ij, 0): the edge weight; anti-similar neighbours say nothing about i.

Rules (fresh samples always take their fresh value):

- `keep`: z_i = z_old_i. Scores age until the planner re-scores them.
- `delta`: z_i = z_old_i + sum_j w_ij d_j / sum_j w_ij over fresh neighbours j, where
  d_j = z_j - z_old_j is how far j's score moved since the previous round. It tracks a drift that a
  whole neighbourhood shares (the model learned or forgot a region) while keeping i's own offset
  from its neighbours. No fresh neighbour: keep.
- `smooth`: with weights normalised over i's neighbours (sum_j w_ij = 1) and strength lambda, z_i
  is the exact minimiser of (z - z_old_i)^2 / 2 + lambda * sum_j w_ij (z - z_j)^2 / 2. Setting the
  derivative (z - z_old_i) + lambda * sum_j w_ij (z - z_j) to zero gives
  z_i = (z_old_i + lambda * sum_j w_ij z_j) / (1 + lambda). It pulls i towards the level of its
  neighbourhood, fresh neighbours carrying the newest level. It is one exact step per sample
  given its neighbours' values, not the joint minimiser over all stale samples at once.
  A stale sample without a previous value takes the weighted mean of its neighbours (the
  minimiser of the neighbour term alone); lambda = 0 is `keep`.

Non-finite values (a sample never scored; +-inf counts as unknown) never enter a sum; a stale
sample whose previous value is NaN stays NaN under `keep` and `delta`, which the selectors treat
as never scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import estimation_kernels, numba_enabled
from grace_selection.core.config import ESTIMATION_RULES, EstimationRule
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph

FloatArray = npt.NDArray[np.float64]
Estimator = Callable[[KnnGraph, FloatArray, FloatArray, npt.NDArray[np.bool_], float], FloatArray]


# Rows the compiled delta rule sums as numpy does: numpy adds up to 128 float64 values with eight
# partial sums (PW_BLOCKSIZE) and splits longer runs, which the kernel does not reproduce.
_COMPILED_MAX_K = 128


def estimate_stale_scores(
    graph: KnnGraph,
    previous: npt.ArrayLike,
    current: npt.ArrayLike,
    fresh: npt.ArrayLike,
    rule: str,
    strength: float = 1.0,
) -> npt.NDArray[np.float32]:
    """The full (N,) float32 importance vector: fresh values where `fresh`, the rule elsewhere.

    previous: (N,) last round's vector (NaN where nothing was known).
    current: (N,) the newest values; read only where `fresh` is True.
    fresh: (N,) bool, the samples re-scored since the previous round. A fresh sample whose
        current value is not finite is treated as stale.
    rule: a key of `ESTIMATORS`; strength: lambda of `smooth` (ignored by the other rules).
    """
    if rule not in ESTIMATION_RULES:
        raise ValueError(f"rule: unknown estimation rule {rule!r}; use one of {sorted(ESTIMATORS)}")
    estimator = ESTIMATORS[rule]
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength: must be a finite number >= 0, got {strength!r}")
    n = graph.n
    prev = _as_vector("previous", previous, n)
    cur = _as_vector("current", current, n)
    fresh_arr = np.asarray(fresh)
    if fresh_arr.dtype != np.bool_ or fresh_arr.shape != (n,):
        raise ValueError(
            f"fresh: must be a bool array of shape ({n},), got {fresh_arr.dtype} {fresh_arr.shape}"
        )
    is_fresh = fresh_arr & np.isfinite(cur)
    estimate = estimator(graph, prev, cur, is_fresh, float(strength))
    out = np.where(is_fresh, cur, estimate)
    return out.astype(np.float32)


def estimate_keep(
    graph: KnnGraph,
    previous: FloatArray,
    current: FloatArray,
    fresh: npt.NDArray[np.bool_],
    strength: float,
) -> FloatArray:
    """z_i = z_old_i: the identity on stale samples."""
    del graph, current, fresh, strength
    return previous.copy()


def estimate_delta(
    graph: KnnGraph,
    previous: FloatArray,
    current: FloatArray,
    fresh: npt.NDArray[np.bool_],
    strength: float,
) -> FloatArray:
    """z_i = z_old_i + the weighted mean change of i's fresh neighbours; none fresh: keep.

    Compiled when numba is enabled (`estimation_kernels`, about 10x less CPU at N = 1M), the
    same bits either way.
    """
    del strength
    if numba_enabled() and graph.neighbors.shape[1] <= _COMPILED_MAX_K:
        estimate: FloatArray = estimation_kernels().estimate_delta(
            np.ascontiguousarray(graph.neighbors, dtype=np.int32),
            np.ascontiguousarray(graph.similarities, dtype=np.float32),
            np.ascontiguousarray(previous, dtype=np.float64),
            np.ascontiguousarray(current, dtype=np.float64),
            np.ascontiguousarray(fresh, dtype=np.bool_),
        )
        return estimate
    # d_j is defined only where j was re-scored and had a previous value to move from.
    moved = fresh & np.isfinite(previous)
    change = np.zeros_like(previous)  # (N,)
    np.subtract(current, previous, out=change, where=moved)
    weights, nbr = _edge_weights(graph)  # (N, k), (N, k)
    # In place: each (N, k) float64 temporary is 80 MB at N = 1M; same operations, same bits.
    np.multiply(weights, moved[nbr], out=weights)
    total = weights.sum(axis=1)  # (N,)
    moved_by = change[nbr]
    np.multiply(weights, moved_by, out=moved_by)
    shift = moved_by.sum(axis=1)
    mean_shift: FloatArray = np.divide(shift, total, out=np.zeros_like(shift), where=total > 0)
    return previous + mean_shift


def estimate_smooth(
    graph: KnnGraph,
    previous: FloatArray,
    current: FloatArray,
    fresh: npt.NDArray[np.bool_],
    strength: float,
) -> FloatArray:
    """z_i = (z_old_i + lambda * sum_j w_ij z_j) / (1 + lambda), weights normalised per row."""
    value_now = np.where(fresh, current, previous)  # (N,) z_j as known now
    known = np.isfinite(value_now)
    weights, nbr = _edge_weights(graph)
    weights = weights * known[nbr]
    total = weights.sum(axis=1)
    pulled = (weights * np.where(known, value_now, 0.0)[nbr]).sum(axis=1)
    has_neighbours = total > 0
    neighbour_mean = np.divide(pulled, total, out=np.zeros_like(pulled), where=has_neighbours)
    blended = (previous + strength * neighbour_mean) / (1.0 + strength)
    # Without neighbours the minimiser is z_old; without z_old it is the neighbour mean.
    out = np.where(has_neighbours, blended, previous)
    return np.where(np.isfinite(previous) | ~has_neighbours, out, neighbour_mean)


ESTIMATORS: Mapping[EstimationRule, Estimator] = MappingProxyType(
    {"keep": estimate_keep, "delta": estimate_delta, "smooth": estimate_smooth}
)


def _edge_weights(graph: KnnGraph) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """w_ij = max(sim_ij, 0) on real edges, 0 on padding; and neighbour ids safe to gather."""
    valid = graph.neighbors != NO_NEIGHBOR
    weights = graph.similarities.astype(np.float64)
    np.maximum(weights, 0.0, out=weights)
    weights[~valid] = 0.0
    # Padding points at row 0; its weight is 0, so the gathered value never counts.
    nbr = np.where(valid, graph.neighbors, 0).astype(np.intp)
    return weights, nbr


def _as_vector(name: str, values: npt.ArrayLike, n: int) -> FloatArray:
    arr = np.array(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name}: must have shape ({n},) like the graph, got {arr.shape}")
    # An infinite score is no score: treating it as unknown keeps it out of every sum.
    arr[~np.isfinite(arr)] = np.nan
    return arr

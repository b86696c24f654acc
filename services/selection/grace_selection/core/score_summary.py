"""Summaries of a round's scores for people: histograms split by group, quantiles per stratum.

A histogram of everything hides what matters (is the coreset where the scores are high? do
estimates look like measurements?), so each group gets its counts over the same bin edges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True, slots=True, eq=False)
class GroupHistogram:
    """edges: (bins + 1,) float64; counts: (bins,) int64 of every finite value; groups: the
    counts of each named subset over the same edges (a value outside every group is still in
    `counts`)."""

    edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    groups: Mapping[str, npt.NDArray[np.int64]]


def histogram_by_group(
    values: npt.ArrayLike,
    groups: Mapping[str, npt.NDArray[np.bool_]],
    bins: int,
    value_range: tuple[float, float] | None = None,
) -> GroupHistogram:
    """Counts of the finite `values` (N,) in `bins` equal bins, overall and per group mask (N,).

    value_range: fixed (lo, hi) edges, e.g. (0, 1) for a rank; else the finite values' span.
    No finite value gives empty arrays.
    """
    if bins < 1:
        raise ValueError(f"bins: must be >= 1, got {bins}")
    arr = np.asarray(values, dtype=np.float64)
    for name, mask in groups.items():
        if mask.shape != arr.shape:
            raise ValueError(f"groups[{name!r}]: shape {mask.shape} must be {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.any():
        empty = np.zeros(0, dtype=np.int64)
        return GroupHistogram(np.zeros(0), empty, dict.fromkeys(groups, empty))
    counts, edges = np.histogram(arr[finite], bins=bins, range=value_range)
    split = {
        name: np.histogram(arr[finite & mask], bins=edges)[0].astype(np.int64)
        for name, mask in groups.items()
    }
    return GroupHistogram(edges, counts.astype(np.int64), split)


@dataclass(frozen=True, slots=True, eq=False)
class StratumQuantiles:
    """count: finite values in the stratum; values: QUANTILES of them (empty if count is 0)."""

    count: int
    values: tuple[float, ...]


def quantiles_by_stratum(
    values: npt.ArrayLike, strata: npt.NDArray[np.int32]
) -> dict[int, StratumQuantiles]:
    """QUANTILES of the finite `values` (N,) within each stratum tag of `strata` (N,)."""
    arr = np.asarray(values, dtype=np.float64)
    if strata.shape != arr.shape:
        raise ValueError(f"strata: shape {strata.shape} must be {arr.shape}")
    finite = np.isfinite(arr)
    out: dict[int, StratumQuantiles] = {}
    for tag in np.unique(strata).tolist():
        chosen = arr[(strata == tag) & finite]
        if chosen.size == 0:
            out[int(tag)] = StratumQuantiles(0, ())
            continue
        qs = np.quantile(chosen, QUANTILES)
        out[int(tag)] = StratumQuantiles(int(chosen.size), tuple(float(q) for q in qs))
    return out

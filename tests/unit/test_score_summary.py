"""Histograms split by group and per-stratum quantiles, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.core.score_summary import (
    QUANTILES,
    histogram_by_group,
    quantiles_by_stratum,
)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 500), bins=st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_groups_that_partition_the_values_add_up_to_the_whole(seed: int, n: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n)
    values[rng.random(n) < 0.2] = np.nan
    member = rng.random(n) < 0.3
    h = histogram_by_group(values, {"coreset": member, "rest": ~member}, bins)
    finite = np.isfinite(values)
    if not finite.any():
        assert h.edges.size == 0
        assert h.counts.size == 0
        return
    expected, edges = np.histogram(values[finite], bins=bins)
    np.testing.assert_array_equal(h.counts, expected)
    np.testing.assert_array_equal(h.edges, edges)
    np.testing.assert_array_equal(h.groups["coreset"] + h.groups["rest"], h.counts)
    assert h.groups["coreset"].sum() == np.count_nonzero(member & finite)


def test_a_fixed_range_keeps_its_edges() -> None:
    h = histogram_by_group(np.array([0.2, 0.4, 1.0]), {}, 4, (0.0, 1.0))
    np.testing.assert_allclose(h.edges, [0, 0.25, 0.5, 0.75, 1.0])
    assert h.counts.tolist() == [1, 1, 0, 1]


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="bins"):
        histogram_by_group(np.zeros(3), {}, 0)
    with pytest.raises(ValueError, match=r"groups\['x'\]"):
        histogram_by_group(np.zeros(3), {"x": np.zeros(2, bool)}, 3)
    with pytest.raises(ValueError, match="strata"):
        quantiles_by_stratum(np.zeros(3), np.zeros(2, np.int32))


def test_quantiles_per_stratum_are_numpys_over_its_finite_values() -> None:
    rng = np.random.default_rng(2)
    strata = rng.integers(0, 4, 1000).astype(np.int32)
    values = rng.normal(strata, 1.0)
    values[strata == 3] = np.nan  # a stratum with nothing known
    out = quantiles_by_stratum(values, strata)
    assert sorted(out) == [0, 1, 2, 3]
    for s in (0, 1, 2):
        chosen = values[strata == s]
        assert out[s].count == chosen.size
        np.testing.assert_allclose(out[s].values, np.quantile(chosen, QUANTILES))
    assert out[3].count == 0
    assert out[3].values == ()
    assert out[0].values[2] < out[2].values[2]  # medians follow the strata's levels

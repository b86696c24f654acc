"""Rank normalisation, score combination and the noise guard (core.importance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grace_selection.core import ScoreTable, SelectionConfig
from grace_selection.core.importance import (
    NEUTRAL_RANK,
    combine_scores,
    guard_noise,
    normalize_importance,
    readmit_guarded,
)

# Small integers make ties frequent; NaN stands for "never scored".
score_values = hnp.arrays(
    np.float64,
    st.integers(1, 60),
    elements=st.one_of(st.integers(-5, 5).map(float), st.just(math.nan)),
)


@settings(max_examples=100, deadline=None)
@given(score_values)
def test_ranks_are_in_unit_interval_and_keep_nan(values: np.ndarray) -> None:
    ranks = normalize_importance(values)
    assert ranks.dtype == np.float32
    assert np.array_equal(np.isnan(ranks), np.isnan(values))
    known = ranks[~np.isnan(ranks)]
    if known.size:
        assert known.min() > 0.0
        assert known.max() <= 1.0


@settings(max_examples=100, deadline=None)
@given(score_values)
def test_ranks_preserve_order_and_ties(values: np.ndarray) -> None:
    known = ~np.isnan(values)
    v, r = values[known], normalize_importance(values)[known]
    less, equal = v[:, None] < v[None, :], v[:, None] == v[None, :]
    assert (r[:, None] < r[None, :])[less].all()
    assert (r[:, None] == r[None, :])[equal].all()


@settings(max_examples=100, deadline=None)
@given(score_values)
def test_ranks_ignore_monotone_rescaling(values: np.ndarray) -> None:
    # A new model may scale gradient norms arbitrarily; the utility must not care.
    assert np.array_equal(
        normalize_importance(values),
        normalize_importance(np.exp(values) * 7.0 + 3.0),
        equal_nan=True,
    )


def test_average_rank_of_ties_and_top_is_one() -> None:
    ranks = normalize_importance([10.0, 20.0, 20.0, 40.0])
    assert ranks.tolist() == pytest.approx([0.25, 0.625, 0.625, 1.0])


def test_all_nan_stays_nan() -> None:
    assert np.isnan(normalize_importance([math.nan, math.nan])).all()


def test_rank_rejects_matrices() -> None:
    with pytest.raises(ValueError, match="1-D"):
        normalize_importance(np.zeros((2, 2)))


@settings(max_examples=100, deadline=None)
@given(score_values, st.floats(0.0, 0.5))
def test_noise_guard_drops_exactly_the_top_fraction(values: np.ndarray, beta: float) -> None:
    eligible = guard_noise(values, beta)
    known = ~np.isnan(values)
    dropped = ~eligible
    assert int(dropped.sum()) == math.floor(beta * int(known.sum()))
    assert not (dropped & ~known).any(), "never-scored samples are always eligible"
    if dropped.any() and (eligible & known).any():
        assert values[dropped].min() >= values[eligible & known].max()


def test_noise_guard_breaks_ties_by_lower_id() -> None:
    assert guard_noise([5.0, 9.0, 9.0, 9.0], 0.5).tolist() == [True, False, False, True]


def test_noise_guard_rejects_a_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        guard_noise([1.0], 1.5)


def _table(loss: list[float], importance: list[float]) -> ScoreTable:
    return ScoreTable.from_arrays(loss, importance, [0] * len(loss))


def test_combine_weights_importance_and_loss_ranks() -> None:
    table = _table([4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    imp = normalize_importance(table.importance)
    loss = normalize_importance(table.loss)
    for alpha in (0.0, 0.3, 1.0):
        utility, eligible = combine_scores(table, SelectionConfig(importance_weight=alpha))
        assert utility.dtype == np.float32
        assert np.allclose(utility, alpha * imp + (1 - alpha) * loss, atol=1e-6)
        assert eligible.all()


def test_never_scored_samples_get_the_neutral_rank() -> None:
    table = _table([math.nan, 1.0, 2.0], [math.nan, 5.0, 6.0])
    utility, _ = combine_scores(table, SelectionConfig(importance_weight=0.5))
    assert utility[0] == pytest.approx(NEUTRAL_RANK)
    assert np.isfinite(utility).all()


def test_combine_applies_the_noise_guard() -> None:
    importance = np.arange(100, dtype=np.float32)
    table = ScoreTable.from_arrays(np.zeros(100), importance, np.zeros(100))
    _, eligible = combine_scores(table, SelectionConfig(noise_guard_fraction=0.1))
    assert np.flatnonzero(~eligible).tolist() == list(range(90, 100))


def test_readmission_returns_the_least_important_guarded_first() -> None:
    eligible = np.array([True, False, False, False, True])
    importance = np.array([0.0, 9.0, 7.0, 8.0, 1.0], dtype=np.float32)
    assert readmit_guarded(eligible, importance, 2) is eligible
    assert readmit_guarded(eligible, importance, 3).tolist() == [True, False, True, False, True]
    assert readmit_guarded(eligible, importance, 5).all()
    with pytest.raises(ValueError, match="exceeds"):
        readmit_guarded(eligible, importance, 6)

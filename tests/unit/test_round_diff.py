"""The round diff: who entered and left, and a reason each that follows from what was stored."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.core.config import SelectionConfig
from grace_selection.core.importance import combine_scores, guard_noise
from grace_selection.core.round_diff import (
    ENTERED,
    LEFT,
    REASON_CHANGE,
    REASONS,
    UNCHANGED_UTILITY,
    RoundArrays,
    compute_utility,
    diff_rounds,
)
from grace_selection.core.rounds import compute_round
from grace_selection.core.scores import NEVER_SCORED, ScoreTable
from tests.unit.test_rounds import clustered_graph


def random_round(rng: np.random.Generator, n: int, size: int, recorded: bool) -> RoundArrays:
    importance = rng.normal(0.5, 0.5, n).astype(np.float32)
    importance[rng.random(n) < 0.1] = np.nan
    loss = rng.exponential(1.0, n).astype(np.float32)
    estimated = rng.random(n) < 0.6 if recorded else None
    indices = np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)
    return RoundArrays(indices, importance, loss, estimated)


def expected_reason(
    i: int,
    change: int,
    before: RoundArrays,
    after: RoundArrays,
    moved: float,
    guarded: npt.NDArray[np.bool_],
) -> str:
    """The documented rules, one sample at a time (the oracle for the vectorised code)."""
    if change == ENTERED:
        if not np.isfinite(before.importance[i]) and np.isfinite(after.importance[i]):
            return "first_scored"
        if moved > UNCHANGED_UTILITY:
            if after.estimated is None:
                return "score_up"
            return "estimate_up" if after.estimated[i] else "rescored_up"
        return "coverage"
    if guarded[i]:
        return "noise_guard"
    if moved < -UNCHANGED_UTILITY:
        if after.estimated is None:
            return "score_down"
        return "estimate_down" if after.estimated[i] else "rescored_down"
    return "displaced"


@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 300),
    share=st.floats(0.01, 1.0),
    guard=st.sampled_from([0.0, 0.05, 0.3]),
    alpha=st.sampled_from([1.0, 0.5, 0.0]),
    recorded=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_the_diff_is_the_set_difference_and_each_reason_follows_the_rules(
    seed: int, n: int, share: float, guard: float, alpha: float, recorded: bool
) -> None:
    rng = np.random.default_rng(seed)
    size = max(1, round(share * n))
    before = random_round(rng, n, size, recorded)
    after = random_round(rng, n, size, recorded)
    config = SelectionConfig(noise_guard_fraction=guard, importance_weight=alpha)
    diff = diff_rounds(before, after, config)

    old, new = set(before.indices.tolist()), set(after.indices.tolist())
    assert set(diff.entered.tolist()) == new - old
    assert set(diff.left.tolist()) == old - new
    assert diff.stayed == len(old & new)
    assert np.all(np.diff(diff.ids) > 0)
    assert sum(diff.reason_counts().values()) == diff.ids.size
    guarded = ~guard_noise(after.importance, guard)
    for pos, i in enumerate(diff.ids.tolist()):
        change = int(diff.change[pos])
        reason = REASONS[int(diff.reason[pos])]
        assert REASON_CHANGE[int(diff.reason[pos])] == change
        moved = float(diff.utility_after[i]) - float(diff.utility_before[i])
        assert reason == expected_reason(i, change, before, after, moved, guarded), i


@given(seed=st.integers(0, 2**16), alpha=st.sampled_from([1.0, 0.7, 0.0]))
@settings(max_examples=25, deadline=None)
def test_the_utility_is_the_one_the_selector_maximised(seed: int, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    r = random_round(rng, 200, 20, True)
    config = SelectionConfig(importance_weight=alpha)
    assert r.loss is not None
    table = ScoreTable.from_arrays(r.loss, r.importance, np.full(200, NEVER_SCORED))
    expected, _ = combine_scores(table, config)
    np.testing.assert_array_equal(compute_utility(r, config), expected)


def test_a_round_without_a_stored_loss_ranks_by_importance_alone() -> None:
    rng = np.random.default_rng(0)
    r = random_round(rng, 50, 5, True)
    without = RoundArrays(r.indices, r.importance, None, r.estimated)
    config = SelectionConfig(importance_weight=0.5)
    utility = compute_utility(without, config)
    assert np.all(np.isfinite(utility))
    # Every loss rank is the neutral 0.5, so the order is the importance order.
    known = np.isfinite(r.importance)
    order = np.argsort(r.importance[known])
    assert np.all(np.diff(utility[known][order]) >= 0)


def test_reasons_of_two_real_rounds_agree_with_what_was_rescored() -> None:
    """Two rounds of the product's compute_round: a sample said to be re-scored was fresh."""
    n = 400
    graph = clustered_graph(n, 8, 3)
    rng = np.random.default_rng(4)
    config = SelectionConfig(budget_fraction=0.1, rescore_fraction=0.3)
    first_importance = rng.exponential(1.0, n).astype(np.float32)
    loss = rng.exponential(1.0, n).astype(np.float32)
    scored = np.zeros(n, dtype=np.int32)
    table = ScoreTable.from_arrays(loss, first_importance, scored)
    nothing = np.full(n, np.nan, dtype=np.float32)
    r0 = compute_round(graph, table, nothing, np.ones(n, bool), config, round_=0, seed=1)
    fresh = np.zeros(n, dtype=bool)
    fresh[r0.rescore_plan] = True
    second = first_importance.copy()
    second[fresh] = rng.exponential(3.0, int(fresh.sum()))
    scored[fresh] = 1
    table = ScoreTable.from_arrays(loss, second, scored)
    r1 = compute_round(graph, table, r0.importance, fresh, config, round_=1, seed=1)

    before = RoundArrays(r0.coreset.indices, r0.importance, loss, r0.estimated)
    after = RoundArrays(r1.coreset.indices, r1.importance, loss, r1.estimated)
    diff = diff_rounds(before, after, config)
    assert diff.ids.size > 0
    reasons = np.array(REASONS)[diff.reason]
    rescored = np.isin(reasons, ["rescored_up", "rescored_down"])
    estimate = np.isin(reasons, ["estimate_up", "estimate_down"])
    assert rescored.any()
    assert estimate.any()
    assert np.all(fresh[diff.ids[rescored]])
    assert not np.any(fresh[diff.ids[estimate]])
    assert set(np.unique(diff.change).tolist()) <= {ENTERED, LEFT}


def test_rounds_of_different_jobs_are_refused() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match=r"previous\.importance"):
        diff_rounds(
            random_round(rng, 10, 2, True), random_round(rng, 11, 2, True), SelectionConfig()
        )

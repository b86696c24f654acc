"""The rescore planner: size, order of preference, determinism, and the priority formula."""

from __future__ import annotations

import importlib.util

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.core import acceleration
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.rescore import compute_rescore_priority, plan_rescore
from grace_selection.core.scores import NEVER_SCORED


def random_graph(n: int, k: int, seed: int) -> KnnGraph:
    """k distinct non-self neighbours per row, some rows padded with -1."""
    rng = np.random.default_rng(seed)
    nb = np.empty((n, k), dtype=np.int32)
    for i in range(n):
        nb[i] = rng.choice(np.delete(np.arange(n), i), size=k, replace=False)
    sim = rng.uniform(0.1, 1.0, size=(n, k)).astype(np.float32)
    drop = rng.random((n, k)) < 0.2
    nb[drop] = NO_NEIGHBOR
    return KnnGraph.from_arrays(nb, sim)


@st.composite
def planner_inputs(
    draw: st.DrawFn,
) -> tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.int32], int, SelectionConfig]:
    n = draw(st.integers(2, 60))
    k = draw(st.integers(1, min(5, n - 1)))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    current_round = draw(st.integers(0, 6))
    scored = rng.integers(NEVER_SCORED, current_round + 1, size=n).astype(np.int32)
    if draw(st.booleans()):
        scored[scored == NEVER_SCORED] = 0  # most rounds after warm-up have none unscored
    importance = rng.exponential(1.0, n)
    importance[scored == NEVER_SCORED] = np.nan
    config = SelectionConfig(
        rescore_fraction=draw(st.floats(0.0, 1.0)),
        rescore_priority_fraction=draw(st.floats(0.0, 1.0)),
    )
    return random_graph(n, k, seed), importance, scored, current_round, config


@given(inputs=planner_inputs(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_plan_is_sorted_unique_in_range_and_exactly_the_asked_size(
    inputs: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.int32], int, SelectionConfig],
    seed: int,
) -> None:
    graph, importance, scored, current_round, config = inputs
    plan = plan_rescore(graph, importance, scored, current_round, config, seed)
    assert plan.dtype == np.int64
    assert plan.ndim == 1
    assert np.all(np.diff(plan) > 0)
    assert plan.size == 0 or (plan[0] >= 0 and plan[-1] < graph.n)
    assert plan.size == min(graph.n, round(config.rescore_fraction * graph.n))


@given(inputs=planner_inputs(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_never_scored_samples_come_first(
    inputs: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.int32], int, SelectionConfig],
    seed: int,
) -> None:
    graph, importance, scored, current_round, config = inputs
    plan = plan_rescore(graph, importance, scored, current_round, config, seed)
    never = np.flatnonzero(scored == NEVER_SCORED)
    if never.size >= plan.size:
        assert np.isin(plan, never).all()
    else:
        assert np.isin(never, plan).all()


@given(inputs=planner_inputs(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_same_seed_same_plan_and_a_generator_equals_its_seed(
    inputs: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.int32], int, SelectionConfig],
    seed: int,
) -> None:
    graph, importance, scored, current_round, config = inputs
    first = plan_rescore(graph, importance, scored, current_round, config, seed)
    again = plan_rescore(graph, importance, scored, current_round, config, seed)
    from_rng = plan_rescore(
        graph, importance, scored, current_round, config, np.random.default_rng(seed)
    )
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, from_rng)


@given(inputs=planner_inputs(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_the_priority_part_holds_the_highest_priorities(
    inputs: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.int32], int, SelectionConfig],
    seed: int,
) -> None:
    graph, importance, scored, current_round, config = inputs
    plan = plan_rescore(graph, importance, scored, current_round, config, seed)
    priority = compute_rescore_priority(graph, importance, scored, current_round)
    n_priority = round(config.rescore_priority_fraction * plan.size)
    if n_priority == 0:
        return
    # Whatever sits at the n_priority-th place, everything strictly above it is planned.
    cut = np.sort(priority)[::-1][n_priority - 1]
    assert np.isin(np.flatnonzero(priority > cut), plan).all()


def test_priority_follows_the_formula_on_a_small_graph() -> None:
    # 0 -> {1, 2}; 1 -> {0, -1}; 2 -> {0, 1}; 3 -> {0, 1}
    graph = KnnGraph.from_arrays(
        [[1, 2], [0, NO_NEIGHBOR], [0, 1], [0, 1]],
        np.full((4, 2), 0.5),
    )
    importance = np.array([1.0, 3.0, 2.0, np.nan])
    scored = np.array([2, 0, 1, NEVER_SCORED], dtype=np.int32)
    priority = compute_rescore_priority(graph, importance, scored, current_round=2)
    mean_s = (1.0 + 3.0 + 2.0) / 3
    assert priority[0] == pytest.approx((0 + 1) * (1 + abs(1.0 - 2.5) / mean_s))
    assert priority[1] == pytest.approx((2 + 1) * (1 + abs(3.0 - 1.0) / mean_s))
    assert priority[2] == pytest.approx((1 + 1) * (1 + abs(2.0 - 2.0) / mean_s))
    assert priority[3] == np.inf


def test_only_priority_takes_the_oldest() -> None:
    ring = np.roll(np.arange(100, dtype=np.int32), -1)[:, None]
    graph = KnnGraph.from_arrays(ring, np.ones((100, 1)))
    scored = np.zeros(100, dtype=np.int32)
    scored[80:] = 5  # the last twenty were scored in the current round
    config = SelectionConfig(rescore_fraction=0.2, rescore_priority_fraction=1.0)
    plan = plan_rescore(graph, np.ones(100), scored, 5, config, 3)
    # Equal importance means no disagreement: the 20 picks are all from the 80 old ones.
    assert plan.size == 20
    assert np.all(plan < 80)


def test_priority_prefers_a_score_that_disagrees_with_its_neighbours() -> None:
    ring = np.stack([np.roll(np.arange(40), -1), np.roll(np.arange(40), 1)], axis=1)
    graph = KnnGraph.from_arrays(ring, np.ones((40, 2)))
    importance = np.ones(40)
    importance[17] = 9.0  # an outlier: it and its two ring neighbours disagree most
    config = SelectionConfig(rescore_fraction=0.075, rescore_priority_fraction=1.0)
    plan = plan_rescore(graph, importance, np.zeros(40, dtype=np.int32), 2, config, 0)
    np.testing.assert_array_equal(plan, [16, 17, 18])


def test_the_uniform_part_gives_every_sample_the_same_chance() -> None:
    graph = random_graph(50, 3, 1)
    importance = np.random.default_rng(0).exponential(1.0, 50)
    scored = np.zeros(50, dtype=np.int32)
    config = SelectionConfig(rescore_fraction=0.2, rescore_priority_fraction=0.0)
    counts = np.zeros(50)
    trials = 2000
    for seed in range(trials):
        counts[plan_rescore(graph, importance, scored, 1, config, seed)] += 1
    # Each sample is drawn with probability 0.2: 400 expected, sd about 18.
    assert np.all(np.abs(counts - 400) < 90)


def test_the_extremes_plan_nothing_and_everything() -> None:
    graph = random_graph(30, 3, 2)
    scored = np.zeros(30, dtype=np.int32)
    importance = np.ones(30)
    none = plan_rescore(graph, importance, scored, 1, SelectionConfig(rescore_fraction=0.0), 0)
    full = plan_rescore(graph, importance, scored, 1, SelectionConfig(rescore_fraction=1.0), 0)
    assert none.size == 0
    np.testing.assert_array_equal(full, np.arange(30))


@pytest.mark.parametrize(
    ("importance", "scored", "current_round", "field"),
    [
        (np.ones(9), np.zeros(10, dtype=np.int32), 1, "importance"),
        (np.ones(10), np.zeros(10), 1, "scored_round"),
        (np.ones(10), np.full(10, 4, dtype=np.int32), 3, "scored_round"),
    ],
)
def test_bad_inputs_name_the_field(
    importance: npt.NDArray[np.float64],
    scored: npt.NDArray[np.int32],
    current_round: int,
    field: str,
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        plan_rescore(
            random_graph(10, 2, 0), importance, scored, current_round, SelectionConfig(), 0
        )


@pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba (the `fast` extra) not installed"
)
@given(
    n=st.integers(1, 60),
    k=st.sampled_from([1, 3, 7, 8, 9, 10, 16, 17, 40, 150]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_priority_compiled_and_numpy_give_the_same_bits(n: int, k: int, seed: int) -> None:
    # Padding, unknown scores, never-scored samples, values over many magnitudes: the compiled
    # neighbour sums must add up as numpy's pairwise sum does.
    rng = np.random.default_rng(seed)
    nb = rng.integers(0, n, size=(n, k)).astype(np.int32)
    nb[rng.random((n, k)) < 0.2] = NO_NEIGHBOR
    graph = KnnGraph(nb, rng.uniform(0.0, 1.0, size=(n, k)).astype(np.float32))
    importance = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)
    importance[rng.random(n) < 0.2] = np.nan
    scored = rng.integers(NEVER_SCORED, 4, n)
    got = {}
    for mode in ("1", "0"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(acceleration.ENV_VAR, mode)
            got[mode] = compute_rescore_priority(graph, importance, scored, 4)
    assert got["1"].tobytes() == got["0"].tobytes()

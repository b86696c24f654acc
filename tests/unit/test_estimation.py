"""Stale-score estimation: each rule does what its docstring's math says."""

from __future__ import annotations

import importlib.util

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from grace_selection.core import acceleration
from grace_selection.core.estimation import ESTIMATORS, estimate_stale_scores
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph


def random_graph(n: int, k: int, seed: int, *, pad: bool = False) -> KnnGraph:
    """k distinct non-self neighbours per row, similarities in (0, 1]; optional -1 padding."""
    rng = np.random.default_rng(seed)
    nb = np.empty((n, k), dtype=np.int32)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        nb[i] = rng.choice(others, size=k, replace=False)
    sim = rng.uniform(0.05, 1.0, size=(n, k)).astype(np.float32)
    if pad:
        drop = rng.random((n, k)) < 0.3
        nb[drop] = NO_NEIGHBOR
        sim[drop] = 0.0
    return KnnGraph.from_arrays(nb, sim)


def weighted_fresh_mean(
    graph: KnnGraph, values: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_], i: int
) -> float | None:
    """A naive per-row weighted mean over neighbours in `mask`; None when there are none."""
    num = den = 0.0
    for j, s in zip(graph.neighbors[i], graph.similarities[i], strict=True):
        if j != NO_NEIGHBOR and mask[j] and s > 0:
            num += float(s) * values[j]
            den += float(s)
    return num / den if den > 0 else None


@st.composite
def graph_and_state(
    draw: st.DrawFn,
) -> tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    n = draw(st.integers(2, 40))
    k = draw(st.integers(1, min(6, n - 1)))
    seed = draw(st.integers(0, 2**31))
    graph = random_graph(n, k, seed, pad=draw(st.booleans()))
    rng = np.random.default_rng(seed + 1)
    previous = rng.uniform(0.0, 5.0, n)
    current = rng.uniform(0.0, 5.0, n)
    fresh = rng.random(n) < draw(st.floats(0.0, 1.0))
    return graph, previous, current, fresh


@pytest.mark.parametrize("rule", sorted(ESTIMATORS))
@given(state=graph_and_state(), strength=st.floats(0.0, 10.0))
@settings(max_examples=40, deadline=None)
def test_fresh_samples_keep_their_fresh_value_under_every_rule(
    rule: str,
    state: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]],
    strength: float,
) -> None:
    graph, previous, current, fresh = state
    out = estimate_stale_scores(graph, previous, current, fresh, rule, strength)
    assert out.dtype == np.float32
    assert out.shape == (graph.n,)
    np.testing.assert_array_equal(out[fresh], current[fresh].astype(np.float32))
    assert np.isfinite(out).all()


@given(state=graph_and_state())
@settings(max_examples=40, deadline=None)
def test_keep_is_the_identity_on_stale_samples(
    state: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]],
) -> None:
    graph, previous, current, fresh = state
    out = estimate_stale_scores(graph, previous, current, fresh, "keep")
    np.testing.assert_array_equal(out[~fresh], previous[~fresh].astype(np.float32))


@given(state=graph_and_state(), shift=st.floats(-3.0, 3.0))
@settings(max_examples=60, deadline=None)
def test_delta_moves_a_stale_sample_by_its_neighbours_common_shift(
    state: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]],
    shift: float,
) -> None:
    graph, previous, _, fresh = state
    current = previous + shift  # every fresh sample moved by the same c
    out = estimate_stale_scores(graph, previous, current, fresh, "delta")
    for i in np.flatnonzero(~fresh):
        has_fresh = weighted_fresh_mean(graph, current - previous, fresh, int(i)) is not None
        expected = previous[i] + shift if has_fresh else previous[i]
        assert out[i] == pytest.approx(expected, abs=1e-5)


@given(state=graph_and_state())
@settings(max_examples=60, deadline=None)
def test_delta_is_the_weighted_mean_change_of_fresh_neighbours(
    state: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]],
) -> None:
    graph, previous, current, fresh = state
    out = estimate_stale_scores(graph, previous, current, fresh, "delta")
    for i in np.flatnonzero(~fresh):
        mean_change = weighted_fresh_mean(graph, current - previous, fresh, int(i))
        expected = previous[i] + (mean_change or 0.0)
        assert out[i] == pytest.approx(expected, rel=1e-5, abs=1e-5)


@given(state=graph_and_state(), strength=st.floats(0.0, 20.0))
@settings(max_examples=40, deadline=None)
def test_smooth_is_the_exact_minimiser_of_its_objective(
    state: tuple[KnnGraph, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]],
    strength: float,
) -> None:
    graph, previous, current, fresh = state
    out = estimate_stale_scores(graph, previous, current, fresh, "smooth", strength)
    now = np.where(fresh, current, previous)
    for i in np.flatnonzero(~fresh):
        row = graph.neighbors[i]
        real = row != NO_NEIGHBOR
        weights = np.maximum(graph.similarities[i][real].astype(np.float64), 0.0)
        values = now[row[real]]
        if weights.sum() == 0:
            assert out[i] == pytest.approx(previous[i], abs=1e-6)
            continue
        weights = weights / weights.sum()

        def objective(
            z: float,
            i: int = int(i),
            w: npt.NDArray[np.float64] = weights,
            v: npt.NDArray[np.float64] = values,
        ) -> float:
            return float(0.5 * (z - previous[i]) ** 2 + strength * np.sum(w * (z - v) ** 2) / 2)

        numeric = minimize_scalar(
            objective, bounds=(-1.0, 6.0), method="bounded", options={"xatol": 1e-9}
        )
        assert out[i] == pytest.approx(numeric.x, abs=1e-4)
        # No other value does better than the closed form, up to float32 rounding.
        assert objective(float(out[i])) <= objective(float(numeric.x)) + 1e-6


def test_smooth_with_zero_strength_is_keep() -> None:
    graph = random_graph(30, 4, 7)
    rng = np.random.default_rng(0)
    previous, current = rng.random(30), rng.random(30)
    fresh = rng.random(30) < 0.5
    np.testing.assert_array_equal(
        estimate_stale_scores(graph, previous, current, fresh, "smooth", 0.0),
        estimate_stale_scores(graph, previous, current, fresh, "keep"),
    )


def test_smooth_fills_a_never_scored_sample_with_its_neighbours_mean() -> None:
    # 0 -> {1, 2} with weights 1 and 3; sample 0 was never scored.
    graph = KnnGraph.from_arrays([[1, 2], [0, 2], [0, 1]], [[1.0, 3.0], [1.0, 1.0], [1.0, 1.0]])
    previous = np.array([np.nan, 2.0, 4.0])
    current = np.array([np.nan, 2.0, 6.0])
    fresh = np.array([False, False, True])
    out = estimate_stale_scores(graph, previous, current, fresh, "smooth", 1.0)
    assert out[0] == pytest.approx((1 * 2.0 + 3 * 6.0) / 4)
    # keep and delta cannot invent a value for it.
    for rule in ("keep", "delta"):
        assert np.isnan(estimate_stale_scores(graph, previous, current, fresh, rule)[0])


def test_delta_ignores_anti_similar_padded_and_never_scored_neighbours() -> None:
    graph = KnnGraph.from_arrays(
        [[1, 2, 3, NO_NEIGHBOR], [0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4], [0, 1, 2, 3]],
        [[0.5, -0.4, 0.9, 0.0]] + [[1.0, 1.0, 1.0, 1.0]] * 4,
    )
    previous = np.array([1.0, 1.0, 1.0, np.nan, 1.0])
    current = np.array([0.0, 3.0, 100.0, 50.0, 1.0])
    fresh = np.array([False, True, True, True, False])
    out = estimate_stale_scores(graph, previous, current, fresh, "delta")
    # Only neighbour 1 counts for row 0: 2 is anti-similar, 3 had no previous value, -1 is padding.
    assert out[0] == pytest.approx(1.0 + 2.0)


def test_a_fresh_flag_on_a_nan_score_falls_back_to_the_rule() -> None:
    graph = random_graph(5, 2, 3)
    previous = np.arange(5, dtype=np.float64)
    current = np.full(5, np.nan)
    out = estimate_stale_scores(graph, previous, current, np.ones(5, dtype=bool), "keep")
    np.testing.assert_array_equal(out, previous.astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rule": "median"}, "rule"),
        ({"strength": -1.0}, "strength"),
        ({"strength": float("nan")}, "strength"),
        ({"previous": np.zeros(4)}, "previous"),
        ({"current": np.zeros((5, 1))}, "current"),
        ({"fresh": np.zeros(5)}, "fresh"),
        ({"fresh": np.zeros(4, dtype=bool)}, "fresh"),
    ],
)
def test_bad_inputs_name_the_field(kwargs: dict[str, object], field: str) -> None:
    graph = random_graph(5, 2, 0)
    args: dict[str, object] = {
        "previous": np.zeros(5),
        "current": np.zeros(5),
        "fresh": np.zeros(5, dtype=bool),
        "rule": "delta",
        "strength": 1.0,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}:"):
        estimate_stale_scores(graph, **args)  # type: ignore[arg-type]


@pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba (the `fast` extra) not installed"
)
@given(
    n=st.integers(1, 60),
    k=st.sampled_from([1, 3, 7, 8, 9, 10, 16, 17, 40, 150]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_delta_compiled_and_numpy_give_the_same_bits(n: int, k: int, seed: int) -> None:
    # Row sums in numpy's pairwise order, padding, negative and zero similarities, unknown
    # previous values, non-finite fresh values: the compiled rule must match bit for bit.
    rng = np.random.default_rng(seed)
    nb = rng.integers(0, n, size=(n, k)).astype(np.int32)
    nb[rng.random((n, k)) < 0.2] = NO_NEIGHBOR
    sim = rng.uniform(-0.3, 1.0, size=(n, k)).astype(np.float32)
    sim[rng.random((n, k)) < 0.1] = 0.0
    graph = KnnGraph(nb, sim)
    previous = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)
    previous[rng.random(n) < 0.2] = np.nan
    current = previous + rng.standard_normal(n)
    fresh = rng.random(n) < 0.5  # as estimate_stale_scores passes it: fresh and finite
    got = {}
    for mode in ("1", "0"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(acceleration.ENV_VAR, mode)
            # The rule's float64 output, before the float32 cast: the strictest comparison.
            got[mode] = ESTIMATORS["delta"](graph, previous, current, fresh, 1.0)
    assert got["1"].tobytes() == got["0"].tobytes()

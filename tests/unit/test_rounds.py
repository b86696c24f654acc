"""The round function: estimate, select, plan; deterministic and consistent with its parts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.core.config import ESTIMATION_RULES, SelectionConfig
from grace_selection.core.estimation import estimate_stale_scores
from grace_selection.core.graph import KnnGraph
from grace_selection.core.rounds import RoundResult, compute_round
from grace_selection.core.scores import NEVER_SCORED, ScoreTable
from grace_selection.core.selectors import select_coreset


def clustered_graph(n: int, k: int, seed: int) -> KnnGraph:
    """The exact cosine k-NN graph of a few Gaussian clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 8))
    x = centres[rng.integers(0, 5, n)] + 0.3 * rng.normal(size=(n, 8))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    nb = np.argsort(-sim, axis=1)[:, :k]
    return KnnGraph.from_arrays(nb, np.take_along_axis(sim, nb, axis=1))


def later_round(
    n: int, seed: int, fresh_share: float
) -> tuple[ScoreTable, npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """A table after round 2: some samples re-scored for round 3, the rest from earlier."""
    rng = np.random.default_rng(seed)
    previous = rng.exponential(1.0, n).astype(np.float32)
    fresh = rng.random(n) < fresh_share
    importance = np.where(fresh, previous * rng.uniform(0.5, 2.0, n), previous)
    scored = np.where(fresh, 3, rng.integers(0, 3, n)).astype(np.int32)
    loss = rng.exponential(1.0, n).astype(np.float32)
    return ScoreTable.from_arrays(loss, importance, scored), previous, fresh


def run(
    graph: KnnGraph,
    table: ScoreTable,
    previous: npt.NDArray[np.float32],
    fresh: npt.NDArray[np.bool_],
    config: SelectionConfig,
    seed: int = 7,
) -> RoundResult:
    return compute_round(graph, table, previous, fresh, config, round_=3, seed=seed)


@pytest.mark.parametrize("selector", ["graph_message_passing", "facility_location"])
@given(
    seed=st.integers(0, 2**16),
    rule=st.sampled_from(ESTIMATION_RULES),
    rho=st.floats(0.0, 1.0),
    fresh_share=st.floats(0.0, 1.0),
)
@settings(max_examples=15, deadline=None)
def test_a_round_is_its_parts_composed(
    selector: str, seed: int, rule: str, rho: float, fresh_share: float
) -> None:
    graph = clustered_graph(120, 6, seed)
    table, previous, fresh = later_round(120, seed, fresh_share)
    config = SelectionConfig(
        budget_fraction=0.1,
        selector=selector,  # type: ignore[arg-type]
        estimation_rule=rule,  # type: ignore[arg-type]
        rescore_fraction=rho,
    )
    result = run(graph, table, previous, fresh, config)

    expected = estimate_stale_scores(graph, previous, table.importance, fresh, rule, 1.0)
    np.testing.assert_array_equal(result.importance, expected)
    np.testing.assert_array_equal(result.estimated, ~fresh)
    selected = select_coreset(graph, replace(table, importance=expected), config, round_=3, seed=7)
    np.testing.assert_array_equal(result.coreset.indices, selected.indices)
    assert result.coreset.digest == selected.digest
    assert result.coreset.size == 12
    assert result.rescore_plan.dtype == np.int64
    assert result.rescore_plan.size == round(rho * 120)
    assert np.all(np.diff(result.rescore_plan) > 0)


def test_same_inputs_and_seed_give_the_identical_round() -> None:
    graph = clustered_graph(200, 8, 1)
    table, previous, fresh = later_round(200, 1, 0.3)
    config = SelectionConfig(selector="facility_location", rescore_fraction=0.3)
    first = run(graph, table, previous, fresh, config)
    again = run(graph, table, previous, fresh, config)
    np.testing.assert_array_equal(first.coreset.indices, again.coreset.indices)
    np.testing.assert_array_equal(first.coreset.weights, again.coreset.weights)  # type: ignore[arg-type]
    np.testing.assert_array_equal(first.rescore_plan, again.rescore_plan)
    np.testing.assert_array_equal(first.importance, again.importance)
    assert first.coreset.digest == again.coreset.digest
    other = run(graph, table, previous, fresh, config, seed=8)
    assert not np.array_equal(first.rescore_plan, other.rescore_plan)


def test_the_rescore_plan_does_not_depend_on_the_selector() -> None:
    graph = clustered_graph(150, 6, 2)
    table, previous, fresh = later_round(150, 2, 0.3)
    gmp = run(graph, table, previous, fresh, SelectionConfig(selector="graph_message_passing"))
    fl = run(graph, table, previous, fresh, SelectionConfig(selector="facility_location"))
    np.testing.assert_array_equal(gmp.rescore_plan, fl.rescore_plan)


def test_the_first_round_uses_the_warm_up_scores_as_they_are() -> None:
    graph = clustered_graph(100, 5, 3)
    rng = np.random.default_rng(3)
    importance = rng.exponential(1.0, 100).astype(np.float32)
    table = ScoreTable.from_arrays(np.full(100, np.nan), importance, np.zeros(100))
    result = compute_round(
        graph,
        table,
        np.full(100, np.nan, dtype=np.float32),
        np.ones(100, dtype=bool),
        SelectionConfig(rescore_fraction=0.2),
        round_=0,
        seed=0,
    )
    np.testing.assert_array_equal(result.importance, importance)
    assert not result.estimated.any()
    assert result.rescore_plan.size == 20


def test_never_scored_samples_are_planned_first() -> None:
    graph = clustered_graph(100, 5, 4)
    importance = np.full(100, np.nan, dtype=np.float32)
    importance[:60] = 1.0
    scored = np.where(np.arange(100) < 60, 0, NEVER_SCORED)
    table = ScoreTable.from_arrays(np.full(100, np.nan), importance, scored)
    fresh = np.arange(100) < 60
    result = compute_round(
        graph, table, importance, fresh, SelectionConfig(rescore_fraction=0.5), round_=1, seed=0
    )
    assert np.isin(np.arange(60, 100), result.rescore_plan).all()


@pytest.mark.parametrize(
    ("n_scores", "round_", "seed", "field"),
    [(99, 0, 0, "scores"), (100, -1, 0, "round_"), (100, 0, -3, "seed")],
)
def test_bad_inputs_name_the_field(n_scores: int, round_: int, seed: int, field: str) -> None:
    graph = clustered_graph(100, 5, 5)
    table = ScoreTable.from_arrays(np.zeros(n_scores), np.ones(n_scores), np.zeros(n_scores))
    with pytest.raises(ValueError, match=f"^{field}:"):
        compute_round(
            graph,
            table,
            np.ones(100, dtype=np.float32),
            np.ones(100, dtype=bool),
            SelectionConfig(),
            round_=round_,
            seed=seed,
        )

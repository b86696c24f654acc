"""The importance-sampling selector, and optimism about samples that have no score yet."""

from __future__ import annotations

import numpy as np
import pytest

from grace_selection.core import KnnGraph, ScoreTable, SelectionConfig, select_coreset
from grace_selection.core.importance import combine_scores
from grace_selection.core.sampling import select_by_importance_sampling

N = 400


def _graph(n: int = N) -> KnnGraph:
    nb = (np.arange(n)[:, None] + np.arange(1, 4)[None, :]) % n  # a ring, 3 neighbours each
    return KnnGraph.from_arrays(nb, np.full(nb.shape, 0.5))


def _table(importance: np.ndarray) -> ScoreTable:
    n = importance.size
    return ScoreTable.from_arrays(np.full(n, np.nan), importance, np.zeros(n))


def test_draws_follow_utility_to_the_power() -> None:
    """Over many draws, each sample is picked about in proportion to u ** power (a budget of
    one makes the draw a single categorical one, whose law is exact)."""
    utility = np.linspace(0.1, 1.0, 10).astype(np.float32)
    graph, eligible = _graph(10), np.ones(10, dtype=bool)
    config = SelectionConfig(selector="importance_sampling", sampling_power=2.0)
    rng = np.random.default_rng(0)
    counts = np.zeros(10)
    for _ in range(20_000):
        counts[select_by_importance_sampling(graph, utility, eligible, 1, config, rng)] += 1
    expected = utility.astype(np.float64) ** 2 / (utility.astype(np.float64) ** 2).sum()
    assert np.abs(counts / counts.sum() - expected).max() < 0.01


def test_power_zero_is_a_uniform_draw_and_a_large_power_the_top_k() -> None:
    utility = np.random.default_rng(1).random(N).astype(np.float32) * 0.99 + 0.01
    eligible = np.ones(N, dtype=bool)
    graph = _graph()
    uniform = SelectionConfig(selector="importance_sampling", sampling_power=0.0)
    picks = [
        select_by_importance_sampling(
            graph, utility, eligible, 40, uniform, np.random.default_rng(s)
        )
        for s in range(200)
    ]
    freq = np.bincount(np.concatenate(picks), minlength=N) / 200
    assert abs(np.corrcoef(freq, utility)[0, 1]) < 0.2  # utility does not matter
    sharp = SelectionConfig(selector="importance_sampling", sampling_power=500.0)
    top = select_by_importance_sampling(
        graph, utility, eligible, 40, sharp, np.random.default_rng(0)
    )
    assert set(top.tolist()) == set(np.argsort(-utility)[:40].tolist())


def test_each_round_draws_afresh_and_a_round_repeats_exactly() -> None:
    importance = np.random.default_rng(2).random(N).astype(np.float32)
    config = SelectionConfig(budget_fraction=0.2, selector="importance_sampling", weighted=False)
    graph, table = _graph(), _table(importance)
    first = select_coreset(graph, table, config, round_=0, seed=5)
    again = select_coreset(graph, table, config, round_=0, seed=5)
    second = select_coreset(graph, table, config, round_=1, seed=5)
    assert first.indices.tolist() == again.indices.tolist()
    assert first.digest == again.digest
    assert first.indices.tolist() != second.indices.tolist()
    assert first.indices.size == second.indices.size == 80


@pytest.mark.parametrize("rank", [0.5, 1.0])
def test_unscored_samples_take_the_configured_rank(rank: float) -> None:
    importance = np.array([0.1, 0.2, np.nan, 0.4], dtype=np.float32)
    utility, _ = combine_scores(_table(importance), SelectionConfig(unscored_rank=rank))
    assert utility[2] == pytest.approx(rank)
    assert utility[[0, 1, 3]].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_unscored_rank_must_be_a_positive_share() -> None:
    with pytest.raises(ValueError, match="unscored_rank"):
        SelectionConfig(unscored_rank=0.0)

"""The tuning study's levers on FinetuneGrace: a proxy scorer charged at its own size, centred
round-0 embeddings, and a re-scoring schedule that changes the share round by round."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from grace_lab.compute import ComputeMeter, matmul_params
from grace_lab.finetune_data import FinetuneData
from grace_lab.finetune_methods import FinetuneGrace, GraceRecipe
from grace_selection.core.config import SelectionConfig
from grace_workers.tiny_gpt import TinyGPT
from tests.unit.test_finetune_training import CONFIG, N_TRAIN, _finetune_data

BLOCK = CONFIG.block_size


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> FinetuneData:
    return _finetune_data(tmp_path_factory.mktemp("levers"), longest=BLOCK)


def _model(seed: int, **shape: Any) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(replace(CONFIG, **shape))


def test_a_proxy_scorer_makes_the_round_zero_pass_at_its_own_cost(data: FinetuneData) -> None:
    main, proxy = _model(0), _model(1, n_embd=8)
    assert matmul_params(proxy) < matmul_params(main)
    recipe = GraceRecipe(SelectionConfig(budget_fraction=0.25, k=5), scorer="proxy")
    grace = FinetuneGrace("grace", data, recipe, seed=0, proxy=proxy)
    meter = ComputeMeter(budget=1e12)
    try:
        grace.begin(main, meter)
        read = int(data.train.lengths.sum())
        assert meter.by_model == {"proxy": pytest.approx(2.0 * matmul_params(proxy) * read)}
        plan = grace.next_round(0, main, meter)
        assert plan.ids.size == pytest.approx(0.25 * N_TRAIN, abs=3)
    finally:
        grace.close()


def test_a_proxy_scorers_later_passes_are_charged_to_the_proxy(data: FinetuneData) -> None:
    main, proxy = _model(0), _model(1, n_embd=8)
    config = SelectionConfig(budget_fraction=0.25, k=5, rescore_fraction=0.5)
    recipe = GraceRecipe(config, signals="workers", scorer="proxy")
    grace = FinetuneGrace("grace", data, recipe, seed=0, proxy=proxy)
    meter = ComputeMeter(budget=1e12)
    try:
        grace.begin(main, meter)
        grace.next_round(0, main, meter)
        assert grace.next_round(1, main, meter).scored_samples > 0
        assert set(meter.by_model) == {"proxy"}
    finally:
        grace.close()


def test_a_proxy_scorer_without_a_proxy_is_refused(data: FinetuneData) -> None:
    recipe = GraceRecipe(SelectionConfig(), scorer="proxy")
    with pytest.raises(ValueError, match="proxy"):
        FinetuneGrace("grace", data, recipe, seed=0)


def test_centred_embeddings_reach_the_graph_without_their_shared_direction(
    data: FinetuneData,
) -> None:
    model = _model(0)
    recipe = GraceRecipe(SelectionConfig(budget_fraction=0.25, k=5), centre=True)
    grace = FinetuneGrace("grace", data, recipe, seed=0)
    try:
        grace.begin(model, ComputeMeter(budget=1e12))
        outcome_graph = grace.next_round(0, model, ComputeMeter(budget=1e12))
        assert outcome_graph.ids.size > 0
        last = grace.last_outcome
        assert last is not None
        sims = last.graph.similarities[last.graph.neighbors >= 0]
        # Raw pooled states of one model sit in one narrow cone; centred ones spread out.
        assert float(np.median(sims)) < 0.99
    finally:
        grace.close()


def test_a_rescore_schedule_sets_each_rounds_share(data: FinetuneData) -> None:
    model = _model(0)
    config = SelectionConfig(budget_fraction=0.25, k=5, rescore_fraction=0.0)
    recipe = GraceRecipe(config, signals="both", rescore_schedule=(0.0, 0.5, 0.25))
    grace = FinetuneGrace("grace", data, recipe, seed=0)
    meter = ComputeMeter(budget=1e12)
    try:
        grace.begin(model, meter)
        grace.next_round(0, model, meter)
        assert grace.plan.size == pytest.approx(0.5 * N_TRAIN, abs=2)  # round 1 re-scores half
        scored = grace.next_round(1, model, meter)
        assert scored.scored_samples == pytest.approx(0.5 * N_TRAIN, abs=2)
        assert grace.plan.size == pytest.approx(0.25 * N_TRAIN, abs=2)  # then a quarter
        grace.next_round(2, model, meter)
        assert grace.plan.size == pytest.approx(0.25 * N_TRAIN, abs=2)  # the last one holds
    finally:
        grace.close()

"""The fine-tuning benchmark's FLOP meter: what it counts, and that it refuses an overrun."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_lab.compute import ComputeMeter, forward_flops, matmul_params, train_flops
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

_params = st.integers(min_value=1, max_value=10**7)
_tokens = st.integers(min_value=0, max_value=10**6)


@given(params=_params, tokens=_tokens)
def test_a_training_step_costs_three_forward_passes(params: int, tokens: int) -> None:
    assert train_flops(params, tokens) == 3 * forward_flops(params, tokens)
    assert forward_flops(params, tokens) == 2.0 * params * tokens


@settings(deadline=None)
@given(
    charges=st.lists(
        st.tuples(st.sampled_from(["train", "scoring", "reference"]), _params, _tokens),
        max_size=12,
    ),
    labels=st.lists(st.sampled_from(["main", "proxy", "reference"]), min_size=12, max_size=12),
)
def test_the_total_is_the_sum_of_every_charge_by_kind_and_by_model(
    charges: list[tuple[str, int, int]], labels: list[str]
) -> None:
    meter = ComputeMeter(budget=1e18)
    expected = {"train": 0.0, "scoring": 0.0, "reference": 0.0}
    for (kind, params, tokens), label in zip(charges, labels, strict=False):
        if kind == "train":
            meter.charge_training(params, tokens)
            expected["train"] += train_flops(params, tokens)
        elif kind == "scoring":
            meter.charge_scoring(params, tokens, label)
            expected["scoring"] += forward_flops(params, tokens)
        else:
            meter.charge_reference(train_flops(params, tokens))
            expected["reference"] += train_flops(params, tokens)
    assert meter.train == pytest.approx(expected["train"])
    assert meter.scoring == pytest.approx(expected["scoring"])
    assert meter.reference == pytest.approx(expected["reference"])
    assert meter.total == pytest.approx(sum(expected.values()))
    # Every scoring FLOP is attributed to exactly one model.
    assert sum(meter.by_model.values()) == pytest.approx(meter.scoring)
    assert meter.remaining == pytest.approx(max(0.0, 1e18 - meter.total))


@given(budget=st.floats(min_value=1.0, max_value=1e12), spent=st.floats(0.0, 2e12))
def test_remaining_never_goes_negative_and_the_fraction_tracks_the_total(
    budget: float, spent: float
) -> None:
    meter = ComputeMeter(budget=budget)
    meter.charge_reference(spent)
    assert meter.remaining >= 0.0
    assert meter.remaining == max(0.0, budget - spent)
    assert meter.spent_fraction == pytest.approx(spent / budget)


def test_a_zero_budget_counts_as_spent() -> None:
    assert ComputeMeter(budget=0.0).spent_fraction == 1.0


@given(params=_params, tokens=st.integers(1, 10**5), slack=st.integers(-10, 10))
def test_can_score_accepts_exactly_the_passes_that_fit_in_what_is_left(
    params: int, tokens: int, slack: int
) -> None:
    # Budget: one training step already spent, then room for `tokens + slack` scored tokens.
    room = max(0, tokens + slack)
    meter = ComputeMeter(budget=train_flops(params, 3) + forward_flops(params, room))
    meter.charge_training(params, 3)
    assert meter.can_score(params, tokens) == (tokens <= room)
    if meter.can_score(params, tokens):
        meter.charge_scoring(params, tokens)
        assert meter.total <= meter.budget


def test_a_meter_that_is_already_over_budget_refuses_any_pass() -> None:
    meter = ComputeMeter(budget=100.0)
    meter.charge_reference(150.0)
    assert meter.remaining == 0.0
    assert not meter.can_score(1, 1)
    assert meter.can_score(1, 0)  # reading nothing costs nothing


def test_charge_scoring_defaults_to_the_main_model_and_keeps_models_apart() -> None:
    meter = ComputeMeter(budget=1e9)
    meter.charge_scoring(10, 5)
    meter.charge_scoring(4, 5, "reference")
    meter.charge_scoring(10, 1)
    assert meter.by_model == {"main": 120.0, "reference": 40.0}
    assert meter.train == meter.reference == 0.0


def _tiny(vocab: int = 50, block: int = 24, n_layer: int = 1, n_embd: int = 16) -> TinyGPT:
    config = TinyGPTConfig(
        vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=2, n_embd=n_embd
    )
    return TinyGPT(config)


@pytest.mark.parametrize(("n_layer", "n_embd"), [(1, 16), (2, 32)])
def test_matmul_params_is_every_weight_but_the_embedding_lookups(n_layer: int, n_embd: int) -> None:
    model = _tiny(n_layer=n_layer, n_embd=n_embd)
    lookups = model.wte.weight.numel() + model.wpe.weight.numel()
    assert matmul_params(model) == sum(p.numel() for p in model.parameters()) - lookups
    assert matmul_params(model) >= model.output_layer.weight.numel()


def test_matmul_params_ignores_the_position_table_but_counts_the_output_layer() -> None:
    # More positions: a bigger wpe lookup, the same P.
    assert matmul_params(_tiny(block=48)) == matmul_params(_tiny(block=24))
    # One more vocabulary entry: one more wte row (free) and one more output row (counted).
    assert matmul_params(_tiny(vocab=51)) - matmul_params(_tiny(vocab=50)) == 16

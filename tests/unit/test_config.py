"""SelectionConfig validates every field with an error that names it, and round-trips."""

from __future__ import annotations

from typing import Any

import pytest

from grace_proto.models import SelectionConfigModel
from grace_selection.core.config import SelectionConfig, SelectionConfigError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("budget_fraction", 0.0),
        ("budget_fraction", 1.5),
        ("budget_fraction", float("nan")),
        ("selector", "kmeans"),
        ("k", 0),
        ("k", 2.5),
        ("gamma", -1.0),
        ("noise_guard_fraction", 0.9),
        ("stochastic_epsilon", 0.0),
        ("rescore_fraction", -0.1),
        ("estimation_rule", "magic"),
        ("drift_threshold", 3.0),
        ("stratum_budgets", {0: 0.5, 1: 0.2}),
        ("stratum_budgets", {}),
    ],
)
def test_invalid_field_is_named(field: str, value: Any) -> None:
    with pytest.raises(SelectionConfigError) as err:
        SelectionConfig(**{field: value})
    assert err.value.field.startswith(field)


def test_round_trip_through_dict_and_wire_model() -> None:
    config = SelectionConfig(budget_fraction=0.2, stratum_budgets={1: 0.25, 0: 0.75}, k=7)
    again = SelectionConfig.from_dict(config.to_dict())
    assert again == config
    assert again.canonical_json() == config.canonical_json()
    wire = SelectionConfigModel.model_validate(config.to_dict())
    assert SelectionConfig.from_dict(wire.model_dump()) == config


def test_unknown_field_is_refused() -> None:
    with pytest.raises(SelectionConfigError) as err:
        SelectionConfig.from_dict({"budget": 0.1})
    assert err.value.field == "budget"


def test_wire_model_defaults_match_the_core() -> None:
    assert SelectionConfig.from_dict(SelectionConfigModel().model_dump()) == SelectionConfig()

"""The selection config: every knob of a GRACE round, validated once, frozen."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Spelled once, in the dependency-free names module that the wire models share.
from grace_proto.names import ESTIMATION_RULES, SELECTOR_NAMES, EstimationRule, SelectorName

__all__ = [
    "ESTIMATION_RULES",
    "SELECTOR_NAMES",
    "EstimationRule",
    "SelectionConfig",
    "SelectionConfigError",
    "SelectorName",
]


class SelectionConfigError(ValueError):
    """A config field is invalid. `field` names it; the message says how to fix it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class SelectionConfig:
    """How a job selects its coreset each round.

    budget_fraction: share of the N samples in each round's coreset (0 < b <= 1).
    selector: which selector picks the coreset (see `grace_selection.core.selectors`).
    k: neighbours per sample in the k-NN graph.
    gamma: similarity sharpness in message passing, weight exp(-gamma * distance).
    diversity_weight: lambda in facility location (importance term weight), or the strength of
        the reverse down-weighting in message passing.
    noise_guard_fraction: beta, the top fraction of importance dropped as likely label noise.
    stochastic_epsilon: epsilon of stochastic greedy (smaller is closer to plain greedy). The
        facility-location selector runs exact greedy since issue 15 and does not read it; it
        stays for `facility_location.maximize_facility_location` and saved configs.
    rescore_fraction: rho, the share of N re-scored each round; the rest is estimated.
    rescore_priority_fraction: share of the rescore plan taken by priority, the rest uniform.
    estimation_rule: how stale scores are estimated from fresh neighbours.
    smooth_strength: lambda of the `smooth` rule.
    drift_threshold: tau, cosine distance beyond which a re-embedded node is re-linked.
    importance_weight: alpha in combined = alpha * importance + (1 - alpha) * loss rank.
    stratum_budgets: optional {stratum: share of the budget}; None splits proportionally.
    weighted: return CRAIG-style weights (how many samples each pick stands for).
    sampling_power: of `importance_sampling`, P(pick) proportional to utility ** power
        (0: uniform random; large: close to a top-k).
    unscored_rank: the utility rank of a sample with no importance (or loss) yet: 0.5 treats
        it as a median one; 1 is optimism, unseen samples rank with the most important.
    """

    budget_fraction: float = 0.1
    selector: SelectorName = "graph_message_passing"
    k: int = 10
    gamma: float = 1.0
    diversity_weight: float = 1.0
    noise_guard_fraction: float = 0.0
    stochastic_epsilon: float = 0.01
    rescore_fraction: float = 0.3
    rescore_priority_fraction: float = 0.5
    estimation_rule: EstimationRule = "delta"
    smooth_strength: float = 1.0
    drift_threshold: float = 0.1
    importance_weight: float = 1.0
    stratum_budgets: Mapping[int, float] | None = field(default=None)
    weighted: bool = True
    sampling_power: float = 1.0
    unscored_rank: float = 0.5

    def __post_init__(self) -> None:
        _check_fraction("budget_fraction", self.budget_fraction, allow_zero=False)
        if self.selector not in SELECTOR_NAMES:
            raise SelectionConfigError(
                "selector", f"unknown selector {self.selector!r}; use one of {list(SELECTOR_NAMES)}"
            )
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= 256:
            raise SelectionConfigError("k", f"must be an integer in 1..256, got {self.k!r}")
        _check_nonneg("gamma", self.gamma)
        _check_nonneg("diversity_weight", self.diversity_weight)
        _check_fraction("noise_guard_fraction", self.noise_guard_fraction, upper=0.5)
        _check_fraction("stochastic_epsilon", self.stochastic_epsilon, allow_zero=False)
        _check_fraction("rescore_fraction", self.rescore_fraction)
        _check_fraction("rescore_priority_fraction", self.rescore_priority_fraction)
        if self.estimation_rule not in ESTIMATION_RULES:
            raise SelectionConfigError(
                "estimation_rule",
                f"unknown rule {self.estimation_rule!r}; use one of {list(ESTIMATION_RULES)}",
            )
        _check_nonneg("smooth_strength", self.smooth_strength)
        _check_nonneg("sampling_power", self.sampling_power)
        _check_fraction("unscored_rank", self.unscored_rank, allow_zero=False)
        _check_fraction("drift_threshold", self.drift_threshold, upper=2.0)
        _check_fraction("importance_weight", self.importance_weight)
        if self.stratum_budgets is not None:
            if not self.stratum_budgets:
                raise SelectionConfigError("stratum_budgets", "must be null or a non-empty map")
            for stratum, share in self.stratum_budgets.items():
                if not isinstance(stratum, int) or stratum < 0:
                    raise SelectionConfigError(
                        "stratum_budgets", f"keys are stratum ids >= 0, got {stratum!r}"
                    )
                _check_fraction(f"stratum_budgets[{stratum}]", share)
            total = sum(self.stratum_budgets.values())
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise SelectionConfigError(
                    "stratum_budgets", f"shares must sum to 1, they sum to {total:.6g}"
                )
            # Freeze the mapping so that the config stays hashable and immutable.
            object.__setattr__(self, "stratum_budgets", dict(sorted(self.stratum_budgets.items())))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; stratum keys become strings as JSON demands."""
        out = dataclasses.asdict(self)
        if self.stratum_budgets is not None:
            out["stratum_budgets"] = {str(k): v for k, v in self.stratum_budgets.items()}
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SelectionConfig:
        """Build from a dict such as `to_dict` returns; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SelectionConfigError(
                unknown[0], f"unknown config field; known fields are {sorted(known)}"
            )
        values = dict(raw)
        budgets = values.get("stratum_budgets")
        if budgets is not None:
            try:
                values["stratum_budgets"] = {int(k): float(v) for k, v in budgets.items()}
            except (TypeError, ValueError, AttributeError) as exc:
                raise SelectionConfigError(
                    "stratum_budgets", "must map integer stratum ids to shares"
                ) from exc
        return cls(**values)

    def canonical_json(self) -> str:
        """A stable serialisation, the config's part of a coreset digest."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _check_fraction(
    name: str, value: float, *, allow_zero: bool = True, upper: float = 1.0
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SelectionConfigError(name, f"must be a finite number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not low_ok or value > upper:
        interval = f"[0, {upper}]" if allow_zero else f"(0, {upper}]"
        raise SelectionConfigError(name, f"must be in {interval}, got {value!r}")


def _check_nonneg(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SelectionConfigError(name, f"must be a finite number, got {value!r}")
    if value < 0:
        raise SelectionConfigError(name, f"must be >= 0, got {value!r}")

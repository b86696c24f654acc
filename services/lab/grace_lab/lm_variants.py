"""The rows of the text tuning study (`lm_tuning.py`): each a sampling method and, for GRACE,
the `SelectionConfig` overrides and in-process options it runs with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BASELINE = "random per round"


@dataclass(frozen=True, slots=True)
class Variant:
    """One row of the study: a sampling method and, for GRACE, its config and options."""

    kind: str  # "grace", "random per round" or "random static"
    config: Mapping[str, Any] = field(default_factory=dict)  # SelectionConfig overrides
    use_weights: bool = False
    invert_importance: bool = False
    report_losses: bool = True
    centre_embeddings: bool = False
    importance_per_document: bool = False
    demote_previous: bool = False
    minilm_embeddings: bool = False


EQUAL_SHARES = {0: 0.334, 1: 0.333, 2: 0.333}


def grace(**config: Any) -> Variant:
    return Variant("grace", config)


VARIANTS: dict[str, Variant] = {
    BASELINE: Variant(BASELINE),
    "random static": Variant("random static"),
    # The service defaults (message passing, importance only, no guard, rho 0.3, delta).
    "GRACE default": grace(),
    "GRACE weighted": Variant("grace", {}, use_weights=True),
    "GRACE inverted": Variant("grace", {}, invert_importance=True),
    "GRACE guard 0.1": grace(noise_guard_fraction=0.1),
    "GRACE guard 0.3": grace(noise_guard_fraction=0.3),
    "GRACE guard 0.5": grace(noise_guard_fraction=0.5),
    "GRACE loss rank": grace(importance_weight=0.0),
    "GRACE FL": grace(selector="facility_location"),
    "GRACE FL lambda 0": grace(selector="facility_location", diversity_weight=0.0),
    "GRACE FL lambda 0.1": grace(selector="facility_location", diversity_weight=0.1),
    "GRACE MP div 4": grace(diversity_weight=4.0),
    "GRACE MP gamma 5": grace(gamma=5.0),
    "GRACE k 30": grace(k=30),
    "GRACE full rescoring": grace(rescore_fraction=1.0),
    "GRACE centred": Variant("grace", {}, centre_embeddings=True),
    "GRACE doc importance": Variant("grace", {}, importance_per_document=True),
    "GRACE demote previous": Variant("grace", {}, demote_previous=True),
    # The fixed sentence encoder (all-MiniLM-L6-v2) instead of the model's hidden states.
    "GRACE MiniLM": Variant("grace", {}, minilm_embeddings=True),
    "GRACE centred doc importance": Variant(
        "grace", {}, centre_embeddings=True, importance_per_document=True
    ),
    "GRACE FL centred doc importance": Variant(
        "grace",
        {"selector": "facility_location"},
        centre_embeddings=True,
        importance_per_document=True,
    ),
    # Source-balanced budgets (the held-out set is balanced; training data is 60/25/15), with
    # the random baseline that gets the same balance, to separate balance from selection.
    "GRACE strata equal": grace(stratum_budgets=EQUAL_SHARES),
    "random per round strata equal": Variant("random strata", {"stratum_budgets": EQUAL_SHARES}),
    "random per round by length": Variant("random by length"),
}


def make_provider(
    name: str, variant: Variant, data: Any, budget: float, seed: int, initial: Any
) -> Any:
    import numpy as np

    from grace_lab.inprocess import InProcessGrace, StratifiedRandomPerRound
    from grace_lab.providers import (
        LengthWeightedRandomPerRound,
        RandomPerRoundProvider,
        RandomStaticProvider,
    )
    from grace_selection.core.config import SelectionConfig

    n = len(data.train)
    size = max(1, round(budget * n))
    if variant.kind == BASELINE:
        return RandomPerRoundProvider(n, size, seed)
    if variant.kind == "random static":
        return RandomStaticProvider(n, size, seed)
    if variant.kind == "random by length":
        return LengthWeightedRandomPerRound(np.asarray(data.train.lengths), size, seed)
    config = SelectionConfig(budget_fraction=budget, **dict(variant.config))
    if variant.kind == "random strata":
        return StratifiedRandomPerRound(n, size, seed, data.train_strata, config.stratum_budgets)
    provider = InProcessGrace(
        name,
        data.train,
        data.train_strata,
        config,
        seed=seed,
        initial=initial,
        report_losses=variant.report_losses,
        invert_importance=variant.invert_importance,
        centre_embeddings=variant.centre_embeddings,
        importance_per_document=variant.importance_per_document,
        demote_previous=variant.demote_previous,
        fixed_embeddings=minilm_embeddings(data, seed) if variant.minilm_embeddings else None,
    )
    return provider


def minilm_embeddings(data: Any, seed: int, dim: int = 64) -> Any:
    """The training documents through the packaged MiniLM, projected as a job's would be;
    cached next to the data (the encoding takes about a minute on 2 cores)."""
    import numpy as np

    from grace_lab.text_encoder import MiniLMEncoder, jsonl_texts, project_fixed

    cache = data.train_jsonl.with_name("train.minilm.npy")
    if not cache.exists():
        vectors = MiniLMEncoder().encode(list(jsonl_texts(data.train_jsonl)))
        tmp = cache.with_name("train.minilm.tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(cache)
    return project_fixed(np.load(cache), dim, seed)

"""The selectors, chosen by name, and `select_coreset`, which turns a round's inputs into a
Coreset.

Every selector has one signature,
    fn(graph, utility, eligible, budget, config, rng) -> (budget,) int64 distinct eligible ids,
so a new one is a function and a line in SELECTORS, not a subclass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from grace_selection.core.budget import budget_size
from grace_selection.core.config import SelectionConfig, SelectorName
from grace_selection.core.coreset import Coreset, digest_inputs
from grace_selection.core.facility_location import select_facility_location
from grace_selection.core.graph import KnnGraph
from grace_selection.core.importance import combine_scores, readmit_guarded
from grace_selection.core.message_passing import select_graph_message_passing
from grace_selection.core.sampling import select_by_importance_sampling
from grace_selection.core.scores import ScoreTable
from grace_selection.core.strata import partition_by_stratum
from grace_selection.core.weights import compute_coverage_weights

Selector: TypeAlias = Callable[
    [
        KnnGraph,
        npt.NDArray[np.float32],
        npt.NDArray[np.bool_],
        int,
        SelectionConfig,
        np.random.Generator,
    ],
    npt.NDArray[np.int64],
]

SELECTORS: Mapping[SelectorName, Selector] = MappingProxyType(
    {
        "graph_message_passing": select_graph_message_passing,
        "facility_location": select_facility_location,
        "importance_sampling": select_by_importance_sampling,
    }
)


def select_coreset(
    graph: KnnGraph,
    scores: ScoreTable,
    config: SelectionConfig,
    *,
    round_: int,
    seed: int,
    selector: Selector | None = None,
) -> Coreset:
    """Select round `round_`'s coreset.

    1. utility and eligibility from `combine_scores` (rank-normalised scores, noise guard);
    2. budget = round(config.budget_fraction * N), clamped to [1, N];
    3. per stratum (if `scores.stratum` is set) a share of the budget, selected on the
       stratum's own subgraph by `SELECTORS[config.selector]`; if the noise guard left a
       stratum fewer candidates than its budget, its least important guarded samples return;
    4. CRAIG weights per stratum when config.weighted.
    Randomness comes only from np.random.default_rng([seed, round_]), consumed in stratum
    order: a stochastic selector draws afresh each round, and the same inputs, seed and round
    give the identical coreset, digest included. selector: one to run instead of
    SELECTORS[config.selector] (the service's sharded selection), with the same contract.
    """
    _check_inputs(graph, scores, round_, seed)
    utility, eligible = combine_scores(scores, config)
    budget = budget_size(graph.n, config.budget_fraction)
    rng = np.random.default_rng([seed, round_])
    selector = SELECTORS[config.selector] if selector is None else selector
    all_picks: list[npt.NDArray[np.int64]] = []
    all_weights: list[npt.NDArray[np.float32]] = []
    for part in partition_by_stratum(graph, scores.stratum, budget, config.stratum_budgets):
        part_eligible = readmit_guarded(
            eligible[part.members], scores.importance[part.members], part.budget
        )
        local = np.sort(
            selector(
                part.graph, utility[part.members], part_eligible, part.budget, config, rng
            ).astype(np.int64)
        )
        if local.shape[0] != part.budget or (local.size > 1 and not (local[1:] > local[:-1]).all()):
            raise RuntimeError(
                f"selector {config.selector!r} returned {local.shape[0]} ids with repeats or "
                f"a wrong count for a budget of {part.budget}; selectors must return distinct ids"
            )
        all_picks.append(part.members[local])
        if config.weighted:
            all_weights.append(compute_coverage_weights(part.graph, local))
    picks = np.concatenate(all_picks)
    order = np.argsort(picks, kind="stable")
    weights = np.concatenate(all_weights)[order] if config.weighted else None
    arrays = [graph.neighbors, graph.similarities, scores.loss, scores.importance]
    arrays.append(scores.scored_round)
    if scores.stratum is not None:
        arrays.append(scores.stratum)
    digest = digest_inputs(config.canonical_json(), seed, round_, *arrays)
    return Coreset(picks[order], weights, round_, seed, digest)


def _check_inputs(graph: KnnGraph, scores: ScoreTable, round_: int, seed: int) -> None:
    if graph.n != scores.n:
        raise ValueError(
            f"scores cover {scores.n} samples but the graph has {graph.n}; both must describe "
            "the same samples 0..N-1"
        )
    if graph.n == 0:
        raise ValueError("there are no samples to select from (N = 0)")
    for name, value in (("round_", round_), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")

"""One GRACE round as a pure function: estimate, select, plan the next rescore.

The service calls `compute_round` with what it knows when round r is due: the k-NN graph, the
score table (fresh values for the samples re-scored since the last round, older ones for the
rest), last round's importance vector and which samples are fresh. It gets back the coreset to
publish, the rescore plan to publish with it (the samples to score *for* round r + 1), and the
importance vector it used, which is the `previous_importance` of the next call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grace_selection.core.config import SelectionConfig
from grace_selection.core.coreset import Coreset
from grace_selection.core.estimation import estimate_stale_scores
from grace_selection.core.graph import KnnGraph
from grace_selection.core.rescore import plan_rescore
from grace_selection.core.scores import ScoreTable
from grace_selection.core.selectors import Selector, select_coreset

# Mixed into the seed so that the rescore plan draws from its own stream, independent of the
# selector's: changing the selector never changes which samples get re-scored, and vice versa.
_PLAN_STREAM = 0x5245_5343  # "RESC"


@dataclass(frozen=True, slots=True, eq=False)
class RoundResult:
    """coreset: what trainers train on in this round.
    rescore_plan: sorted int64 ids to score with the newest model for the next round.
    importance: (N,) float32, the vector the selection used: fresh values and estimates
        (NaN where a sample was never scored and nothing could be estimated).
    estimated: (N,) bool, True where importance is not a fresh score: an estimate, or NaN
        where nothing is known yet.
    """

    coreset: Coreset
    rescore_plan: npt.NDArray[np.int64]
    importance: npt.NDArray[np.float32]
    estimated: npt.NDArray[np.bool_]


def compute_round(
    graph: KnnGraph,
    scores: ScoreTable,
    previous_importance: npt.NDArray[np.float32],
    fresh: npt.NDArray[np.bool_],
    config: SelectionConfig,
    *,
    round_: int,
    seed: int,
    selector: Selector | None = None,
) -> RoundResult:
    """Estimate stale importance (config.estimation_rule), select, plan the next rescore.

    graph: the k-NN graph over the N samples. scores: what is known per sample; its importance
        is read where `fresh`. previous_importance: (N,) the `importance` of the last round's
        result (all NaN before the first round). fresh: (N,) bool, re-scored since that round.
    round_: the round being computed; ages are measured against it. seed: the job seed; the
        same inputs and seed give the same result. selector: instead of config.selector's
        (select_coreset).
    """
    n = graph.n
    if scores.n != n:
        raise ValueError(f"scores: has {scores.n} samples but the graph has {n}; they must match")
    if round_ < 0:
        raise ValueError(f"round_: must be >= 0, got {round_}")
    if seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    importance = estimate_stale_scores(
        graph,
        previous_importance,
        scores.importance,
        fresh,
        config.estimation_rule,
        config.smooth_strength,
    )
    measured = np.asarray(fresh, dtype=np.bool_) & np.isfinite(scores.importance)
    table = ScoreTable(
        loss=scores.loss,
        importance=importance,
        scored_round=scores.scored_round,
        stratum=scores.stratum,
    )
    coreset = select_coreset(graph, table, config, round_=round_, seed=seed, selector=selector)
    plan_rng = np.random.default_rng([seed, round_, _PLAN_STREAM])
    plan = plan_rescore(graph, importance, scores.scored_round, round_, config, plan_rng)
    return RoundResult(
        coreset=coreset,
        rescore_plan=plan,
        importance=importance,
        estimated=~measured,
    )

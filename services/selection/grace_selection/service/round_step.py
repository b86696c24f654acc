"""One round's computation over a job's state: the step the service and the lab both run.

`step_round` copies what the round needs from the job's `JobArrays` (under the caller's lock),
brings the k-NN graph up to the newest embeddings with the job's `GraphKeeper`, and calls
`core.rounds.compute_round`. It publishes nothing: the service's round runner publishes the
outcome through the round lifecycle; the lab's in-process provider trains on it. Because both
call this one function over the service's own state, a study measures the product's round and
not a copy of it.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.rounds import RoundResult, compute_round
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.keeper_types import GraphUpdate
from grace_selection.service.sharded_keeper import JobKeeper, ShardedGraphKeeper
from grace_selection.service.state import EmbeddedRows, JobArrays, RoundInputs


@dataclass(frozen=True, slots=True, eq=False)
class RoundOutcome:
    """What a round computed, before anything is published.

    inputs: the copy of the job's state the round used. graph: the k-NN graph it selected on.
    update: what the graph keeper did (None when no embedding changed since the last round).
    result: the coreset, the rescore plan for the next round and the importance used.
    graph_seconds / select_seconds: graph upkeep, and estimation + selection + planning.
    """

    inputs: RoundInputs
    graph: KnnGraph
    update: GraphUpdate | None
    result: RoundResult
    graph_seconds: float
    select_seconds: float


def step_round(
    arrays: JobArrays,
    keeper: JobKeeper,
    config: SelectionConfig,
    previous_importance: npt.NDArray[np.float32],
    *,
    round_: int,
    seed: int,
    lock: AbstractContextManager[Any] | None = None,
) -> RoundOutcome:
    """Compute round `round_` from the job's state; same state and seed, same outcome.

    previous_importance: (N,) the importance the previous round selected with (all NaN
        before the first round). lock: held while the job's arrays are read, so that ingest
        can go on while the graph and the selection compute (the service passes its job lock).
    """
    guard: AbstractContextManager[Any] = nullcontext() if lock is None else lock
    with guard:
        inputs = arrays.round_inputs(round_, keeper.seq)
        # One copy of the vectors (service.state): the graph holds the job's matrix, and
        # takes every embedding that waited for this round.
        taken = arrays.take_round_rows() if isinstance(keeper, GraphKeeper) else None

    def fetch_all() -> tuple[npt.NDArray[np.int64], EmbeddedRows, int]:
        rows = arrays.embedded_rows(guard)
        return rows.ids, rows, rows.seq

    graph_start = time.perf_counter()
    graph, update = keeper.graph, None
    if taken is not None:
        if graph is None or taken.ids.size:
            try:
                update = keeper.update(
                    taken.ids,
                    taken.rows,
                    inputs.seq,
                    config.k,
                    config.drift_threshold,
                    fetch_all,
                    matrix=arrays.embeddings,
                )
            except BaseException:
                with guard:
                    arrays.return_round_rows(taken)
                raise
            graph = update.graph
    elif graph is None or inputs.changed_ids.size:
        update = keeper.update(
            inputs.changed_ids,
            arrays.rows(inputs.changed_ids, inputs.seq, guard),
            inputs.seq,
            config.k,
            config.drift_threshold,
            fetch_all,
        )
        graph = update.graph
    graph_seconds = time.perf_counter() - graph_start

    select_start = time.perf_counter()
    # A sharded job selects with RandGreeDi over its shards (service.sharded_keeper).
    selector = keeper.selector() if isinstance(keeper, ShardedGraphKeeper) else None
    result = compute_round(
        graph,
        inputs.scores,
        previous_importance,
        inputs.fresh,
        config,
        round_=round_,
        seed=seed,
        selector=selector,
    )
    return RoundOutcome(
        inputs=inputs,
        graph=graph,
        update=update,
        result=result,
        graph_seconds=graph_seconds,
        select_seconds=time.perf_counter() - select_start,
    )

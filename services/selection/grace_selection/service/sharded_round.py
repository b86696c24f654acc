"""The sharded round's graph and selection, driven from the service through a ShardedIndex.

The service process keeps the job's state (vectors, scores, published rounds) and is its only
writer; the shards hold derived data only (their part's index and local graph), so a lost shard
is rebuilt from the vectors. The steps, timed one by one:
1. build: split the samples into random parts, each shard indexes its part;
2. graph: every point is queried on every shard and the top k merged (the global graph);
3. parts: each shard runs the greedy on its own graph (RandGreeDi's parts, in parallel);
4. merge: the greedy over the union of the parts' picks on the global graph, here, and the
   better of it and the best part (core.partitioned.merge_part_selections).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.ports import ShardedIndex
from grace_selection.core.budget import budget_size
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.partitioned import MergedSelection, merge_part_selections

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ShardedOutcome:
    graph: KnnGraph
    selection: MergedSelection
    seconds: dict[str, float] = field(default_factory=dict)


def select_sharded(
    index: ShardedIndex,
    vectors: npt.NDArray[np.float32],
    utility: npt.NDArray[np.float32],
    eligible: npt.NDArray[np.bool_],
    config: SelectionConfig,
    seed: int,
) -> ShardedOutcome:
    """Build the sharded index over `vectors` (N, d), its global k-NN graph (k = config.k), and
    the RandGreeDi selection of round(config.budget_fraction * N) samples."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    index.build(vectors, seed)
    seconds["build"] = time.perf_counter() - started
    graph = _timed(seconds, "graph", lambda: index.knn_graph(config.k))
    budget = budget_size(graph.n, config.budget_fraction)
    parts = _timed(
        seconds,
        "parts",
        lambda: index.select_parts(utility, eligible, budget, config.k, config, seed),
    )
    selection = _timed(
        seconds,
        "merge",
        lambda: merge_part_selections(graph, utility, eligible, budget, parts, config, seed),
    )
    return ShardedOutcome(graph, selection, seconds)


def _timed(seconds: dict[str, float], name: str, call: Callable[[], T]) -> T:
    started = time.perf_counter()
    value = call()
    seconds[name] = time.perf_counter() - started
    return value

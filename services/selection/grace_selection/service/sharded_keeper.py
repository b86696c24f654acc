"""A job's graph and selection on a ShardedIndex (GRACE_SHARDS > 0): the round, spread over shards.

The service stays the one writer of the job's state: each round that brings new embeddings,
this keeper reads every embedded row (block by block, under the job's lock), has the shards
index a random part each (`ShardedIndex.build`), and takes the global k-NN graph from the
fanned-out queries (`knn_graph`). Its `selector` replaces the one-process greedy with
RandGreeDi: each shard selects on its own part, and the merge round runs here
(`core.partitioned.merge_part_selections`). Estimation, weights and the rescore plan run
unchanged on the global graph.

The shards hold derived data only. Nothing is snapshotted: after a restart, or when a shard
is lost, the next round builds again from the stored embeddings. There is no incremental
refresh: a sharded job rebuilds every round (docs/scale.md gives the cost).

A stratified job selects per stratum on the stratum's own subgraph; the shards index the whole
job, so there each stratum runs the one-process selector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.ports import ShardedIndex
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.partitioned import merge_part_selections
from grace_selection.core.selectors import SELECTORS, Selector
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.keeper_types import GraphUpdate, RowSource

log = logging.getLogger(__name__)
# Rows copied from the job's embeddings per step (65,536 x 384 x 4 B = 96 MiB).
_READ_BLOCK = 65_536
# The shards' random partition: fixed, so that a job's parts stay the same round to round.
_PARTITION_SEED = 0


class ShardedGraphKeeper:
    """The GraphKeeper interface the service uses (update, graph, seq, save, load, delete),
    over a ShardedIndex made by `make_index(dim)` on the first round."""

    def __init__(self, n: int, dim: int, make_index: Callable[[int], ShardedIndex]) -> None:
        self.n, self.dim = n, dim
        self.seq = 0
        self._make_index = make_index
        self._index: ShardedIndex | None = None
        self._graph: KnnGraph | None = None

    @property
    def graph(self) -> KnnGraph | None:
        return self._graph

    @property
    def loaded(self) -> bool:
        return self._graph is not None

    def update(
        self,
        ids: npt.NDArray[np.int64],
        vectors: RowSource,
        seq: int,
        k: int,
        drift_threshold: float,
        fetch_all: Callable[[], tuple[npt.NDArray[np.int64], RowSource, int]],
        *,
        matrix: npt.NDArray[np.floating] | None = None,
    ) -> GraphUpdate:
        """Build the shards and the global graph from every embedded row (ids and vectors,
        the round's changes, are not needed: every round rebuilds; the shards hold their own
        parts, so a job's matrix is never held here)."""
        del ids, vectors, drift_threshold, matrix
        start = time.perf_counter()
        all_ids, rows, all_seq = fetch_all()
        matrix = np.zeros((self.n, self.dim), dtype=np.float32)
        for lo in range(0, all_ids.size, _READ_BLOCK):
            matrix[all_ids[lo : lo + _READ_BLOCK]] = rows[lo : lo + _READ_BLOCK]
        present = np.zeros(self.n, dtype=np.bool_)
        present[all_ids] = True
        if self._index is None:
            self._index = self._make_index(self.dim)
        self._index.build(matrix, _PARTITION_SEED)
        del matrix  # the shards hold their parts
        graph = _only_present(self._index.knn_graph(k), present)
        self._graph = graph
        self.seq = max(self.seq, seq, all_seq)
        seconds = time.perf_counter() - start
        log.info("sharded graph over %d shards: %.1f s", self._index.shards, seconds)
        return GraphUpdate(graph, seconds, int(all_ids.size), self.n, True)

    def selector(self) -> Selector:
        """RandGreeDi over the shards for the whole job; a stratum's subgraph (another size)
        gets the one-process selector."""
        index = self._index

        def select(
            graph: KnnGraph,
            utility: npt.NDArray[np.float32],
            eligible: npt.NDArray[np.bool_],
            budget: int,
            config: SelectionConfig,
            rng: np.random.Generator,
        ) -> npt.NDArray[np.int64]:
            one_process = SELECTORS[config.selector]
            if index is None or graph.n != self.n:
                return one_process(graph, utility, eligible, budget, config, rng)
            seed = int(rng.integers(0, 2**31 - 1))
            parts = index.select_parts(utility, eligible, budget, config.k, config, seed)
            merged = merge_part_selections(graph, utility, eligible, budget, parts, config, seed)
            if merged.picks.size != budget:  # fewer eligible in the parts' union than asked
                return one_process(graph, utility, eligible, budget, config, rng)
            return merged.picks

        return select

    def reports(self) -> list[dict[str, float]]:
        """Per shard: seconds per part of its work and memory in MB ([] before a build)."""
        return [] if self._index is None else self._index.reports()

    def empty_graph(self, k: int) -> KnnGraph:
        return KnnGraph(
            np.full((self.n, k), NO_NEIGHBOR, dtype=np.int32), np.zeros((self.n, k), np.float32)
        )

    def save(self, round_: int) -> None:
        """Nothing to save: the shards are rebuilt from the stored embeddings."""

    def load(self) -> bool:
        return False

    def delete(self) -> None:
        self.close()
        self._graph = None

    def close(self) -> None:
        """Let the shards go (Ray actors are killed); the next round builds new ones."""
        if self._index is not None:
            self._index.close()
            self._index = None


# What a job's graph is kept by: one process (the default), or shards.
JobKeeper: TypeAlias = GraphKeeper | ShardedGraphKeeper


def _only_present(graph: KnnGraph, present: npt.NDArray[np.bool_]) -> KnnGraph:
    """Drop the rows of samples without an embedding and every edge to one (the shards index
    them as zero vectors); rows stay best first, padding last."""
    if present.all():
        return graph
    nb, sim = graph.neighbors.copy(), graph.similarities.copy()
    absent = ~np.append(present, False)[nb]  # padding (-1) lands on the last slot
    absent[~present] = True
    nb[absent], sim[absent] = NO_NEIGHBOR, 0.0
    order = np.argsort(nb == NO_NEIGHBOR, axis=1, kind="stable")
    return KnnGraph(np.take_along_axis(nb, order, axis=1), np.take_along_axis(sim, order, axis=1))

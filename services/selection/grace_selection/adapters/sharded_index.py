"""Sharded k-NN indexes: the shards' answers merged into one graph, the parts' greedy in each.

`LocalShardedIndex` runs its `ShardWorker`s one after another in this process: the reference
for `RayShardedIndex` (same partition, same answers) and a way to bound one process's peak
memory per shard. Both implement the `ShardedIndex` port.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.hnsw_index import HnswParams
from grace_selection.adapters.knn import empty_graph_arrays, graph_rows_into
from grace_selection.adapters.shard_worker import ShardWorker
from grace_selection.adapters.vectors import normalize_rows
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.partitioned import merge_neighbor_lists, partition_randomly

# Rows per fanned-out query call: (rows, k + 1) answers per shard stay a few MB.
BLOCK_ROWS = 65_536


def block_bounds(n: int, block_rows: int) -> list[tuple[int, int]]:
    return [(start, min(n, start + block_rows)) for start in range(0, n, block_rows)]


class LocalShardedIndex:
    """Implements ShardedIndex with in-process shards."""

    def __init__(
        self, dim: int, shards: int, params: HnswParams | None = None, block_rows: int = BLOCK_ROWS
    ) -> None:
        self.dim = dim
        self._params = params or HnswParams(num_threads=1)
        self._workers = [ShardWorker(p, dim, self._params) for p in range(shards)]
        self._vectors: npt.NDArray[np.float32] | None = None
        self._block_rows = block_rows

    @property
    def shards(self) -> int:
        return len(self._workers)

    def build(self, vectors: npt.NDArray[np.float32], seed: int) -> None:
        unit = normalize_rows(np.asarray(vectors, dtype=np.float32))
        parts = partition_randomly(unit.shape[0], self.shards, np.random.default_rng([seed]))
        for worker, members in zip(self._workers, parts, strict=True):
            worker.load(members, unit)
        self._vectors = unit

    def knn_graph(self, k: int) -> KnnGraph:
        unit = self._require_vectors()
        graph_ids, graph_sims = empty_graph_arrays(unit.shape[0], k)
        for a, b in block_bounds(unit.shape[0], self._block_rows):
            answers = [w.query(unit, a, b, k + 1) for w in self._workers]
            merged = merge_neighbor_lists([i for i, _ in answers], [s for _, s in answers], k + 1)
            graph_rows_into(*merged, a, graph_ids, graph_sims)
        return KnnGraph(graph_ids, graph_sims)

    def select_parts(
        self,
        utility: npt.NDArray[np.float32],
        eligible: npt.NDArray[np.bool_],
        budget: int,
        k: int,
        config: SelectionConfig,
        seed: int,
    ) -> list[npt.NDArray[np.int64]]:
        return [w.select(utility, eligible, budget, k, config, seed) for w in self._workers]

    def reports(self) -> list[dict[str, float]]:
        return [w.report() for w in self._workers]

    def close(self) -> None:
        self._workers = []
        self._vectors = None

    def _require_vectors(self) -> npt.NDArray[np.float32]:
        if self._vectors is None:
            raise RuntimeError("build the index before querying it")
        return self._vectors

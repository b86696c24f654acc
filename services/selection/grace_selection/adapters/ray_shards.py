"""RayShardedIndex: one Ray actor per shard, driven from the service (the one writer).

Ray is imported when an index is made, never at import time, so the plain service path and the
core never load it (import-linter contracts in pyproject.toml). The caller starts or joins the
Ray cluster (`ray.init`); this adapter only creates its actors there and kills them on close.

The unit vectors go into the object store once; every actor reads them zero-copy, indexes its
own rows and answers blocks of all-points queries. Blocks are merged as they come back, with a
bounded number in flight so that the answers waiting in the object store stay small.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_proto.usage import missing_extra
from grace_selection.adapters.hnsw_index import HnswParams
from grace_selection.adapters.knn import empty_graph_arrays, graph_rows_into
from grace_selection.adapters.shard_worker import ShardWorker
from grace_selection.adapters.sharded_index import BLOCK_ROWS, block_bounds
from grace_selection.adapters.vectors import normalize_rows
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.partitioned import merge_neighbor_lists, partition_randomly

# Blocks of queries in flight per actor: enough to keep every actor busy while the driver
# merges, few enough that waiting answers stay a few blocks' worth of memory.
_IN_FLIGHT = 3


def import_ray() -> Any:
    """ray, or a MissingExtraError naming the pip extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise (missing_extra(exc, "a sharded index", extra="scale") or exc) from exc
    return ray


@functools.cache
def _remote_worker() -> Any:
    """ShardWorker made a Ray actor class once per process (not on every call)."""
    return import_ray().remote(ShardWorker)


class RayShardedIndex:
    """Implements ShardedIndex on Ray actors.

    cpus_per_shard: Ray CPUs each actor reserves (and hnswlib threads it uses).
    gpus_per_shard: Ray GPUs each actor reserves; None shares what the cluster has among the
        shards (0 on a node without GPUs: a request for an absent GPU would wait forever).
    """

    def __init__(
        self,
        dim: int,
        shards: int,
        params: HnswParams | None = None,
        *,
        cpus_per_shard: float = 1.0,
        gpus_per_shard: float | None = None,
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        self._ray = import_ray()
        if not self._ray.is_initialized():
            raise RuntimeError("start or join a Ray cluster (ray.init) before a RayShardedIndex")
        if gpus_per_shard is None:
            gpus_per_shard = float(self._ray.cluster_resources().get("GPU", 0.0)) / shards
        threads = max(1, int(cpus_per_shard))
        base = params or HnswParams()
        self._params = HnswParams(base.m, base.ef_construction, base.ef_search, threads, base.seed)
        actor = _remote_worker().options(num_cpus=cpus_per_shard, num_gpus=gpus_per_shard)
        self._actors = [actor.remote(p, dim, self._params) for p in range(shards)]
        self._block_rows = block_rows
        self._vectors_ref: Any = None
        self._n = 0

    @property
    def shards(self) -> int:
        return len(self._actors)

    def build(self, vectors: npt.NDArray[np.float32], seed: int) -> None:
        unit = normalize_rows(np.asarray(vectors, dtype=np.float32))
        parts = partition_randomly(unit.shape[0], self.shards, np.random.default_rng([seed]))
        self._vectors_ref = self._ray.put(unit)
        self._n = unit.shape[0]
        del unit  # the object store holds the one copy the actors read
        loads = [
            actor.load.remote(members, self._vectors_ref)
            for actor, members in zip(self._actors, parts, strict=True)
        ]
        self._wait_all(loads)

    def knn_graph(self, k: int) -> KnnGraph:
        if self._vectors_ref is None:
            raise RuntimeError("build the index before querying it")
        # Each merged block goes straight into the (n, k) graph: no (n, k + 1) copy of the answers.
        graph_ids, graph_sims = empty_graph_arrays(self._n, k)
        pending = list(block_bounds(self._n, self._block_rows))
        waiting: dict[Any, tuple[int, int, int]] = {}  # ref -> (block, shard, start)
        answers: dict[int, list[Any]] = {}
        bounds = dict(enumerate(pending))
        next_block = 0
        while next_block < len(pending) or waiting:
            while next_block < len(pending) and len(waiting) < _IN_FLIGHT * self.shards:
                a, b = pending[next_block]
                for shard, actor in enumerate(self._actors):
                    ref = actor.query.remote(self._vectors_ref, a, b, k + 1)
                    waiting[ref] = (next_block, shard, a)
                answers[next_block] = [None] * self.shards
                next_block += 1
            done, _ = self._ray.wait(list(waiting), num_returns=1)
            block, shard, _ = waiting.pop(done[0])
            answers[block][shard] = self._ray.get(done[0])
            if all(part is not None for part in answers[block]):
                a, b = bounds[block]
                parts = answers.pop(block)
                merged = merge_neighbor_lists([p[0] for p in parts], [p[1] for p in parts], k + 1)
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
        utility_ref = self._ray.put(np.asarray(utility, dtype=np.float32))
        eligible_ref = self._ray.put(np.asarray(eligible, dtype=np.bool_))
        refs = [
            a.select.remote(utility_ref, eligible_ref, budget, k, config, seed)
            for a in self._actors
        ]
        self._wait_all(refs)
        return [np.asarray(p, dtype=np.int64) for p in self._ray.get(refs)]

    def reports(self) -> list[dict[str, float]]:
        refs = [a.report.remote() for a in self._actors]
        self._wait_all(refs)
        reports: list[dict[str, float]] = self._ray.get(refs)
        return reports

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        self._vectors_ref = None

    def _wait_all(self, refs: list[Any]) -> None:
        """Wait for every call with ray.wait, raising the first failure as it arrives."""
        remaining = list(refs)
        while remaining:
            done, remaining = self._ray.wait(remaining, num_returns=1)
            self._ray.get(done)  # raises the actor's error, if any

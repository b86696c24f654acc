"""One shard of a sharded k-NN index: its vectors in an hnswlib index, its own greedy.

`ShardWorker` is a plain class: `RayShardedIndex` makes it a Ray actor, `LocalShardedIndex`
runs a few in this process (tests, one machine). It keeps no copy of its vectors beyond the
hnswlib index, which holds them normalised; labels inside the index are local (0..n_p-1) and
answers are mapped back to global sample ids with `members`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.hnsw_index import HnswParams
from grace_selection.adapters.knn import graph_from_neighbors
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.partitioned import part_budget, select_part


class ShardWorker:
    """A shard: `load` its members' vectors, answer blocks of queries, select on its own graph.

    While answering blocks that contain its own members it keeps their rows (local labels),
    so that its local k-NN graph costs no second pass over its points.
    """

    def __init__(self, part: int, dim: int, params: HnswParams | None = None) -> None:
        self.part = part
        self.dim = dim
        self.params = params or HnswParams(num_threads=1)
        self._members = np.empty(0, dtype=np.int64)
        self._index: Any = None
        self._local_ids: npt.NDArray[np.int32] | None = None
        self._local_sims: npt.NDArray[np.float32] | None = None
        self.measures: dict[str, float] = {}  # seconds, CPU seconds and peak MB per part

    def load(self, members: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> int:
        """Index rows `members` of the global (N, dim) matrix `vectors`; returns the count."""
        import hnswlib  # the service extra's; imported here so that nothing loads at import time

        started, cpu = time.perf_counter(), time.process_time()
        self._members = np.asarray(members, dtype=np.int64)
        count = self._members.shape[0]
        index = hnswlib.Index(space="cosine", dim=self.dim)
        index.init_index(
            max_elements=max(count, 16),
            ef_construction=self.params.ef_construction,
            M=self.params.m,
            random_seed=self.params.seed + self.part,
        )
        index.set_num_threads(self.params.num_threads or os.cpu_count() or 1)
        # Added in slices: the gathered copy of this shard's rows never exceeds one slice.
        step = 262_144
        for start in range(0, count, step):
            rows = self._members[start : start + step]
            index.add_items(
                np.ascontiguousarray(vectors[rows]), np.arange(start, start + rows.size)
            )
        self._index = index
        self._local_ids = None
        self._local_sims = None
        self.measures["load"] = time.perf_counter() - started
        self.measures["load_cpu"] = time.process_time() - cpu
        self.measures["load_peak_mb"] = _memory_mb()["peak_rss_mb"]
        return count

    def query(
        self, vectors: npt.NDArray[np.float32], start: int, stop: int, k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """This shard's top k (global ids, cosine similarities) for rows start..stop of the
        global matrix `vectors` (the fan-out of an all-points query), each (stop - start, k)."""
        began, cpu = time.perf_counter(), time.process_time()
        block = np.ascontiguousarray(vectors[start:stop])
        take = min(k, self._members.shape[0])
        self._index.set_ef(max(self.params.ef_search, 2 * take))
        labels, distances = self._index.knn_query(block, k=take)
        labels = labels.astype(np.int64)
        sims = (1.0 - distances).astype(np.float32)
        self._keep_local_rows(labels, sims, start, stop)
        ids = np.full((stop - start, k), -1, dtype=np.int64)
        out_sims = np.full((stop - start, k), -np.inf, dtype=np.float32)
        ids[:, :take] = self._members[labels]
        out_sims[:, :take] = sims
        self._record_part("query", time.perf_counter() - began, time.process_time() - cpu)
        return ids, out_sims

    def _keep_local_rows(
        self,
        labels: npt.NDArray[np.int64],
        sims: npt.NDArray[np.float32],
        start: int,
        stop: int,
    ) -> None:
        """Store the answers of this shard's own members in the block: its local graph rows."""
        count, width = self._members.shape[0], labels.shape[1]
        local_ids, local_sims = self._local_ids, self._local_sims
        if local_ids is None or local_sims is None or local_ids.shape[1] != width:
            local_ids = self._local_ids = np.full((count, width), -1, dtype=np.int32)
            local_sims = self._local_sims = np.full((count, width), -np.inf, dtype=np.float32)
        first, last = np.searchsorted(self._members, [start, stop])
        rows = self._members[first:last] - start  # positions of own members inside the block
        local_ids[first:last] = labels[rows]
        local_sims[first:last] = sims[rows]

    def local_graph(self, k: int) -> KnnGraph:
        """The k-NN graph of this shard's members among themselves, over local ids."""
        if self._local_ids is None or self._local_sims is None:
            raise RuntimeError("query every row of the matrix before asking for the local graph")
        present = np.ones(self._members.shape[0], dtype=np.bool_)
        return graph_from_neighbors(self._local_ids, self._local_sims, present, k)

    def select(
        self,
        utility: npt.NDArray[np.float32],
        eligible: npt.NDArray[np.bool_],
        budget: int,
        k: int,
        config: SelectionConfig,
        seed: int,
    ) -> npt.NDArray[np.int64]:
        """This part's greedy on its own graph; utility and eligible are global (N,) arrays.
        Returns global sample ids, ascending."""
        began, cpu = time.perf_counter(), time.process_time()
        graph = self.local_graph(k)
        local = select_part(
            graph,
            np.ascontiguousarray(utility[self._members]),
            np.ascontiguousarray(eligible[self._members]),
            part_budget(budget, self._members.shape[0]),
            config,
            seed,
            self.part,
        )
        self._record_part("select", time.perf_counter() - began, time.process_time() - cpu)
        picks: npt.NDArray[np.int64] = self._members[local]
        return picks

    def _record_part(self, part: str, wall: float, cpu: float) -> None:
        """Wall and CPU seconds (this process, all threads) summed per part of the work, and
        the process's peak memory so far when the part last ran."""
        self.measures[part] = self.measures.get(part, 0.0) + wall
        self.measures[part + "_cpu"] = self.measures.get(part + "_cpu", 0.0) + cpu
        self.measures[part + "_peak_mb"] = _memory_mb()["peak_rss_mb"]

    def report(self) -> dict[str, float]:
        """Wall and CPU seconds per part of the work (load, query, select; CPU as `<part>_cpu`,
        the peak RSS so far as `<part>_peak_mb`) and this process's memory in MB: resident now
        and peak."""
        return {**self.measures, **_memory_mb(), "count": float(self.count)}

    @property
    def count(self) -> int:
        return int(self._members.shape[0])


def _memory_mb() -> dict[str, float]:
    """This process's resident and peak memory in MB (rss_mb, peak_rss_mb; 0 off Linux)."""
    memory = {"rss_mb": 0.0, "peak_rss_mb": 0.0}
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over a fork, so a forked Ray worker would
    # report its parent's peak.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"
                    memory[key] = int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return memory

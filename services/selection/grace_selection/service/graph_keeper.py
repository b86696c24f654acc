"""A job's k-NN graph and the neighbour index behind it, kept current round after round.

Only the round thread calls `update`; readers (the dashboard's neighbour lists) read `graph`,
an immutable KnnGraph that is replaced whole, so a build never blocks or tears a read.

Embeddings arrive at ingest time but enter the index only here, at round time: HTTP ingest
costs storage alone. The first update builds the graph; later ones repair it (core.repair):
new samples and samples that drifted beyond tau are upserted and their rows, and the rows that
list them, are re-queried. `anchor` keeps the unit vector each sample has in the index (float16
halves its memory; drift is measured to ~1e-3, far below any useful tau).

The index and graph are snapshotted to `folder` after each round: `index-<seq>/` (the index's
own snapshot) and `graph/` (graph, anchor and a meta naming the index folder), so a restart
loads them instead of rebuilding; if they are missing or damaged, the next round rebuilds from
the stored embeddings.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.ports import NeighborIndex
from grace_selection.adapters.snapshot import read_snapshot_meta, write_snapshot
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.repair import insert_reverse_edges, plan_repair, replace_rows

log = logging.getLogger(__name__)
_GRAPH_KIND = "grace-graph"
# Re-querying more than this share of rows costs as much as the all-points query.
_REQUERY_SHARE = 0.5
# hnswlib updates an existing label ~16x slower than it inserts a new one (measured here:
# 6000 x 32, 25 s to update all, 1.6 s to build afresh), so past ~1/16 of N moved a fresh
# build from the stored embeddings is cheaper than updating in place.
_REBUILD_MOVED_SHARE = 0.06


@dataclass(frozen=True, slots=True)
class IndexFactory:
    """How to make an empty index of a dimension, and how to load a saved one."""

    kind: str
    create: Callable[[int], NeighborIndex]
    load: Callable[[Path], NeighborIndex]


@dataclass(frozen=True, slots=True)
class GraphUpdate:
    graph: KnnGraph
    seconds: float
    upserted: int
    requeried: int
    rebuilt: bool


@dataclass(slots=True, eq=False)
class _Built:
    """What exists once a graph was built: the index, the vectors in it and the graph."""

    index: NeighborIndex
    anchor: npt.NDArray[np.float16]  # (N, dim) unit vector of each sample in the index
    in_index: npt.NDArray[np.bool_]  # (N,)
    graph: KnnGraph


class GraphKeeper:
    def __init__(self, n: int, dim: int, factory: IndexFactory, folder: Path) -> None:
        self.n, self.dim = n, dim
        self.factory = factory
        self.folder = folder
        self.seq = 0  # the log seq of the newest embedding the graph reflects
        self._built: _Built | None = None
        self._dirty = False  # changed since the last snapshot
        self._deleted = False
        self._files_lock = threading.Lock()  # save against delete

    @property
    def graph(self) -> KnnGraph | None:
        """The current graph (None before the first round); replaced whole by `update`."""
        return None if self._built is None else self._built.graph

    @property
    def loaded(self) -> bool:
        return self._built is not None

    def update(
        self,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        seq: int,
        k: int,
        drift_threshold: float,
        fetch_all: Callable[[], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]],
    ) -> GraphUpdate:
        """Bring the graph up to the newest embeddings `vectors` of the unique `ids`.

        fetch_all() returns every embedded sample (ids, vectors, seq); it is called when a
        fresh build is cheaper than updating the index in place.
        """
        start = time.perf_counter()
        unit = _unit(vectors)
        built = self._built
        rebuild = built is None or built.graph.k != k
        if built is not None and not rebuild:
            new = ~built.in_index[ids]
            old_ids = ids[~new]
            old_vectors = built.anchor[old_ids].astype(np.float32)
            repair = plan_repair(built.graph, old_ids, old_vectors, unit[~new], drift_threshold)
            moved = np.isin(ids, repair.drifted) | new
            rebuild = bool(np.count_nonzero(moved) > _REBUILD_MOVED_SHARE * self.n)
        if rebuild or built is None:
            all_ids, all_vectors, all_seq = fetch_all()
            built = self._rebuild(all_ids, _unit(all_vectors), k)
            seq = max(seq, all_seq)
            upserted, requeried, rebuilt = all_ids.size, self.n, True
        else:
            up_ids = ids[moved]
            _upsert(built, up_ids, unit[moved])
            rows = np.union1d(repair.relink, ids[new]).astype(np.int64)
            rebuilt = rows.size > _REQUERY_SHARE * self.n
            built.graph = (
                _full_graph(built, self.n, k) if rebuilt else _requery(built, rows, k, up_ids)
            )
            upserted, requeried = up_ids.size, rows.size
        self._built = built
        self.seq = max(self.seq, seq)
        self._dirty = True
        return GraphUpdate(built.graph, time.perf_counter() - start, upserted, requeried, rebuilt)

    def empty_graph(self, k: int) -> KnnGraph:
        return _empty_graph(self.n, k)

    # -- snapshots -------------------------------------------------------------------------

    def save(self, round_: int) -> None:
        """Snapshot index and graph to `folder`; a crash leaves the previous pair usable."""
        with self._files_lock:
            built = self._built
            if built is not None and self._dirty and not self._deleted:
                self._save(built, round_)
                self._dirty = False

    def _save(self, built: _Built, round_: int) -> None:
        index_dir = self.folder / f"index-{self.seq}"
        self.folder.mkdir(parents=True, exist_ok=True)
        built.index.save(index_dir)
        graph, anchor, in_index = built.graph, built.anchor, built.in_index

        def write_files(folder: Path) -> None:
            np.save(folder / "neighbors.npy", graph.neighbors)
            np.save(folder / "similarities.npy", graph.similarities)
            np.save(folder / "anchor.npy", anchor)
            np.save(folder / "in_index.npy", in_index)

        meta = {
            "kind": _GRAPH_KIND,
            "index_kind": self.factory.kind,
            "index_dir": index_dir.name,
            "seq": self.seq,
            "round": round_,
        }
        write_snapshot(self.folder / "graph", meta, write_files)
        for stale in self.folder.glob("index-*"):
            if stale.name not in (index_dir.name, index_dir.name + ".old"):
                shutil.rmtree(stale, ignore_errors=True)

    def load(self) -> bool:
        """Load the last snapshot; False (and a clean slate) if there is none or it is unusable."""
        try:
            meta, folder = read_snapshot_meta(self.folder / "graph", _GRAPH_KIND)
            if meta["index_kind"] != self.factory.kind:
                log.info("index kind changed to %s; the graph will be rebuilt", self.factory.kind)
                return False
            index = self.factory.load(self.folder / str(meta["index_dir"]))
            graph = KnnGraph(
                np.load(folder / "neighbors.npy"), np.load(folder / "similarities.npy")
            )
            anchor = np.load(folder / "anchor.npy")
            in_index = np.load(folder / "in_index.npy")
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError) as exc:
            log.warning(
                "index snapshot in %s is unusable (%s); it will be rebuilt", self.folder, exc
            )
            return False
        if graph.n != self.n or anchor.shape != (self.n, self.dim) or index.dim != self.dim:
            log.warning(
                "index snapshot in %s does not fit the job; it will be rebuilt", self.folder
            )
            return False
        self._built = _Built(index, anchor, in_index, graph)
        self.seq = int(meta["seq"])
        return True

    def delete(self) -> None:
        with self._files_lock:
            self._deleted = True
            shutil.rmtree(self.folder, ignore_errors=True)

    def _rebuild(self, ids: npt.NDArray[np.int64], unit: npt.NDArray[np.float32], k: int) -> _Built:
        built = _Built(
            index=self.factory.create(self.dim),
            anchor=np.zeros((self.n, self.dim), dtype=np.float16),
            in_index=np.zeros(self.n, dtype=bool),
            graph=_empty_graph(self.n, k),
        )
        _upsert(built, ids, unit)
        built.graph = _full_graph(built, self.n, k)
        return built


def _empty_graph(n: int, k: int) -> KnnGraph:
    return KnnGraph(np.full((n, k), NO_NEIGHBOR, dtype=np.int32), np.zeros((n, k), np.float32))


def _upsert(built: _Built, ids: npt.NDArray[np.int64], unit: npt.NDArray[np.float32]) -> None:
    if ids.size:
        built.index.upsert(ids, unit)
        built.anchor[ids] = unit
        built.in_index[ids] = True


def _full_graph(built: _Built, n: int, k: int) -> KnnGraph:
    if len(built.index) == 0:
        return _empty_graph(n, k)
    graph = built.index.knn_graph(k)
    if graph.n == n:
        return graph
    # The index knows ids up to its largest one only; samples beyond have no edges yet.
    padded = _empty_graph(n, k)
    padded.neighbors[: graph.n] = graph.neighbors
    padded.similarities[: graph.n] = graph.similarities
    return padded


def _requery(
    built: _Built, rows: npt.NDArray[np.int64], k: int, moved: npt.NDArray[np.int64]
) -> KnnGraph:
    """Re-query `rows` and let the `moved` nodes enter their new neighbours' rows."""
    graph = built.graph
    rows = rows[built.in_index[rows]]
    if rows.size:
        found, sims = built.index.query(built.anchor[rows].astype(np.float32), k + 1)
        neighbors, similarities = _drop_self(rows, found, sims, k)
        graph = replace_rows(graph, rows, neighbors, similarities)
    return insert_reverse_edges(graph, moved) if moved.size else graph


def _unit(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def _drop_self(
    rows: npt.NDArray[np.int64],
    found: npt.NDArray[np.int64],
    sims: npt.NDArray[np.float32],
    k: int,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Each row's k best results other than itself (the query asked for k + 1)."""
    is_self = found == rows[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True  # self not found (approximate search): drop the worst instead
    keep = ~is_self
    neighbors = found[keep].reshape(rows.shape[0], -1)[:, :k]
    similarities = sims[keep].reshape(rows.shape[0], -1)[:, :k]
    valid = neighbors >= 0
    return (
        np.where(valid, neighbors, NO_NEIGHBOR).astype(np.int32),
        np.where(valid, similarities, 0.0).astype(np.float32),
    )

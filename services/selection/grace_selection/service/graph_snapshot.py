"""A job's graph on disk: written after each round, read at start-up, so that a restart loads
the graph instead of rebuilding it.

`graph/` holds the lists, the unit vectors, which samples they hold and a meta; `index-<seq>/`
the index's own snapshot when the index is kept. A crash leaves the previous snapshot usable;
one that is missing, damaged or made for another job's shape loads as None (the next round
rebuilds from the stored embeddings).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from grace_selection.adapters.ports import NeighborIndex
from grace_selection.adapters.snapshot import read_snapshot_meta, write_snapshot
from grace_selection.core.graph import KnnGraph
from grace_selection.service.built_graph import BuiltGraph

log = logging.getLogger(__name__)
_GRAPH_KIND = "grace-graph"


def save_graph(folder: Path, built: BuiltGraph, index_kind: str, seq: int, round_: int) -> None:
    """Snapshot `built` (and its index, when kept) to `folder`; stale index folders go."""
    folder.mkdir(parents=True, exist_ok=True)
    index_dir: Path | None = None
    if built.index is not None:
        index_dir = folder / f"index-{seq}"
        built.index.save(index_dir)
    graph, vectors, in_index = built.graph, built.vectors, built.in_index

    def write_files(files: Path) -> None:
        np.save(files / "neighbors.npy", graph.neighbors)
        np.save(files / "similarities.npy", graph.similarities)
        np.save(files / "anchor.npy", vectors)  # the name older snapshots used
        np.save(files / "in_index.npy", in_index)

    meta = {
        "kind": _GRAPH_KIND,
        "index_kind": index_kind,
        "index_dir": None if index_dir is None else index_dir.name,
        "seq": seq,
        "round": round_,
        "k": built.k,
    }
    write_snapshot(folder / "graph", meta, write_files)
    keep = () if index_dir is None else (index_dir.name, index_dir.name + ".old")
    for stale in folder.glob("index-*"):
        if stale.name not in keep:
            shutil.rmtree(stale, ignore_errors=True)


def load_graph(
    folder: Path,
    index_kind: str,
    load_index: Callable[[Path], NeighborIndex] | None,
    n: int,
    dim: int,
) -> tuple[BuiltGraph, int] | None:
    """The last snapshot in `folder` and the log seq it reflects; None if there is none, or it
    is unusable or was made for another shape or index kind. load_index: how to load the
    index, when it is kept (None: a snapshot's index folder is ignored)."""
    try:
        meta, files = read_snapshot_meta(folder / "graph", _GRAPH_KIND)
        if meta["index_kind"] != index_kind:
            log.info("index kind changed to %s; the graph will be rebuilt", index_kind)
            return None
        # Snapshots from before the index was dropped name one: load it only when kept.
        index: NeighborIndex | None = None
        if load_index is not None and meta.get("index_dir") is not None:
            index = load_index(folder / str(meta["index_dir"]))
        graph = KnnGraph(np.load(files / "neighbors.npy"), np.load(files / "similarities.npy"))
        # Memory-mapped: the caller copies it into its own dtype, or into the job's matrix.
        vectors = np.load(files / "anchor.npy", mmap_mode="r")
        in_index = np.load(files / "in_index.npy")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        log.warning("graph snapshot in %s is unusable (%s); it will be rebuilt", folder, exc)
        return None
    if graph.n != n or vectors.shape != (n, dim) or (index is not None and index.dim != dim):
        log.warning("graph snapshot in %s does not fit the job; it will be rebuilt", folder)
        return None
    # Snapshots from before the lists were wider hold k columns and no "k": the next
    # update then finds the width wrong and rebuilds once.
    k = int(meta.get("k", graph.k))
    if not 0 <= k <= graph.k:
        log.warning("graph snapshot in %s names k=%d; it will be rebuilt", folder, k)
        return None
    built = BuiltGraph(index, vectors, in_index, graph, k)
    built.publish()
    return built, int(meta["seq"])

"""A built k-NN graph and the steps of keeping it that touch its index or the raw rows.

`BuiltGraph` is what exists once a graph was built: the keeper's lists (2k wide, best first),
the unit vectors they were scored with, which samples they hold, and the build's index when
it is kept (GRACE_GRAPH_KEEP_INDEX). The local joins that refresh it are core.descent's and
core.graph_search's; the policy (what to join, search or rebuild) is service.graph_keeper's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.ports import NeighborIndex
from grace_selection.adapters.vectors import normalize_rows
from grace_selection.core.descent import join_rows, measure_unit_drift, merge_edges
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.neighborhood_join import neighborhood_join
from grace_selection.core.repair import replace_rows
from grace_selection.service.keeper_types import RowSource

# A re-query asks for this many more than k: the index ranks by the places samples had when
# they were upserted, and the answers are re-ranked by their current vectors.
_QUERY_SLACK = 2
# Rows normalised and inserted per step of a build (64k x 384 x 4 B = 96 MiB of scratch).
BUILD_BLOCK = 65536
# Samples a build in parts asks an index for at a time (their answers: 8192 x 21 x 12 B).
_QUERY_BLOCK = 8192
# Re-queried rows re-ranked per step: their answers' vectors, 8192 x 13 x 384 x 4 B = 156 MiB
# (at 1M the benchmark re-queries ~69k rows: 1.3 GB gathered at once).
_RERANK_BLOCK = 8192
# The local join over every neighbourhood joins each node's whole list with up to this many
# nodes that list it. At 1M x 384 (fine-tuning drift, from recall@10 0.936): 12 s to 0.962;
# without reverse neighbours 10.6 s to 0.954; the whole-list pass (join_every_row) took 21.7 s
# to 0.973 (docs/results/pass_join.md).
_PASS_REVERSE = 10


@dataclass(slots=True, eq=False)
class BuiltGraph:
    """What exists once a graph was built: the index, the vectors in it and the graph."""

    index: NeighborIndex | None  # None once dropped after the build (the usual case)
    vectors: npt.NDArray[np.floating]  # (N, dim) current unit vector of each sample in the graph
    in_index: npt.NDArray[np.bool_]  # (N,) in the graph (and in the index, maybe at an old place)
    graph: KnnGraph  # (N, 2k): the keeper's own lists, best first
    k: int  # the published width
    published: KnnGraph | None = None  # the first k of each row; None until `publish`

    def publish(self) -> KnnGraph:
        """Cut the published graph from the lists (a copy: the selection wants C order)."""
        graph = self.graph
        if graph.k != self.k:
            graph = KnnGraph(
                np.ascontiguousarray(graph.neighbors[:, : self.k]),
                np.ascontiguousarray(graph.similarities[:, : self.k]),
            )
        self.published = graph
        return graph


def empty_graph(n: int, k: int) -> KnnGraph:
    return KnnGraph(np.full((n, k), NO_NEIGHBOR, dtype=np.int32), np.zeros((n, k), np.float32))


def upsert_rows(
    index: NeighborIndex,
    built: BuiltGraph,
    ids: npt.NDArray[np.int64],
    unit: npt.NDArray[np.float32],
) -> None:
    if ids.size:
        index.upsert(ids, unit)
        built.vectors[ids] = unit
        built.in_index[ids] = True


def full_graph(index: NeighborIndex, built: BuiltGraph, n: int, k: int) -> KnnGraph:
    if len(index) == 0:
        return empty_graph(n, k)
    graph = index.knn_graph(k, built.vectors)
    if graph.n == n:
        return graph
    # The index knows ids up to its largest one only; samples beyond have no edges yet.
    padded = empty_graph(n, k)
    padded.neighbors[: graph.n] = graph.neighbors
    padded.similarities[: graph.n] = graph.similarities
    return padded


def graph_in_parts(
    create: Callable[[int], NeighborIndex],
    built: BuiltGraph,
    ids: npt.NDArray[np.int64],
    rows: RowSource,
    parts: int,
) -> None:
    """Fill `built` (no index) from the rows of `ids`, with `parts` indexes one after the other.

    The rows are normalised into `built.vectors` first; then each part of the ids is inserted
    into a fresh index, every sample asks it for its width + 1 nearest, the answers are merged
    into the lists (each keeps its best distinct entries), and the index is dropped. The index
    alive at once holds 1/parts of the vectors (hnswlib: 1.16x the raw ones at d = 384 for one
    part); every sample is queried `parts` times. Measured (benchmarks/round.py, d = 384): 2
    parts took 1.19x one index's time at 100k and 1.08x at 1M, where recall@10 rose from 0.989
    to 0.998 (each index is half the size)."""
    width = built.graph.k
    for start in range(0, ids.size, BUILD_BLOCK):
        block = ids[start : start + BUILD_BLOCK]
        built.vectors[block] = normalize_rows(
            np.asarray(rows[start : start + BUILD_BLOCK], np.float32)
        )
        built.in_index[block] = True
    nb, sim = built.graph.neighbors, built.graph.similarities
    dim = built.vectors.shape[1]
    for part in np.array_split(ids, parts):
        if part.size == 0 or width == 0:
            continue
        index = create(dim)
        for start in range(0, part.size, BUILD_BLOCK):
            block = part[start : start + BUILD_BLOCK]
            index.upsert(block, built.vectors[block].astype(np.float32, copy=False))
        for start in range(0, ids.size, _QUERY_BLOCK):
            block = ids[start : start + _QUERY_BLOCK]
            found, sims = index.query(
                built.vectors[block].astype(np.float32, copy=False), width + 1
            )
            real = found >= 0
            merge_edges(
                nb,
                sim,
                np.repeat(block, width + 1)[real.reshape(-1)],
                found[real].astype(np.int64),
                sims[real].astype(np.float32),
            )
        del index


def write_rows(
    matrix: npt.NDArray[np.floating], ids: npt.NDArray[np.int64], unit: npt.NDArray[np.float32]
) -> None:
    for start in range(0, ids.size, BUILD_BLOCK):
        part = slice(start, start + BUILD_BLOCK)
        matrix[ids[part]] = unit[part]


def join_every_neighborhood(
    built: BuiltGraph, ranks: npt.NDArray[np.int64] | None = None
) -> KnnGraph:
    """One pass of NN-descent's local join over every node's neighbourhood (its whole list and
    up to _PASS_REVERSE nodes that list it): rows that drifted in a little at a time, never
    far enough to be joined, find their neighbours again. ranks: the order to visit the nodes
    in (`descent.walk_ranks`). Returns a new graph."""
    return neighborhood_join(built.graph, built.vectors, reverse=_PASS_REVERSE, ranks=ranks)


def join_every_row(
    built: BuiltGraph,
    seq: int,
    random_candidates: int,
    ranks: npt.NDArray[np.int64] | None = None,
) -> KnnGraph:
    """Every row rebuilt from its neighbours' whole lists and random nodes, in place: about
    twice the time of `join_every_neighborhood`, and it lifts recall further (where that one
    falls short: the round benchmark's harsher modelled drift). ranks: the order of the rows."""
    rows = np.flatnonzero(built.in_index).astype(np.int64)
    rng = np.random.default_rng([seq, 0x10])
    return join_rows(
        built.graph,
        built.vectors,
        rows,
        built.in_index,
        rng,
        iterations=1,
        expand=None,  # the whole list
        current=True,
        random_candidates=random_candidates,
        in_place=True,
        ranks=ranks,
    )


def requery_rows(
    built: BuiltGraph, graph: KnnGraph, rows: npt.NDArray[np.int64], k: int
) -> KnnGraph:
    """Re-query `rows` (already upserted), re-rank the answers by the current vectors, and let
    each row's new edges enter the rows they name (reverse edges)."""
    if rows.size == 0 or k == 0:
        return graph
    assert built.index is not None
    query = built.vectors[rows].astype(np.float32)  # (m, dim)
    found, _ = built.index.query(query, k + 1 + _QUERY_SLACK)  # (m, k + 1 + slack)
    real = found >= 0
    cand = np.where(real, found, 0)
    sims = np.empty(cand.shape, dtype=np.float32)
    for start in range(0, rows.size, _RERANK_BLOCK):  # (block, k + 1 + slack, dim) at a time
        part = slice(start, start + _RERANK_BLOCK)
        gathered = built.vectors[cand[part]].astype(np.float32, copy=False)
        sims[part] = np.einsum("md,mcd->mc", query[part], gathered)
    sims = np.where(real & built.in_index[cand], sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")
    neighbors, similarities = _drop_self(
        rows, np.take_along_axis(found, order, axis=1), np.take_along_axis(sims, order, axis=1), k
    )
    graph = replace_rows(graph, rows, neighbors, similarities)
    nb, sim = graph.neighbors.copy(), graph.similarities.copy()
    merge_edges(
        nb, sim, nb[rows].reshape(-1).astype(np.int64), np.repeat(rows, k), sim[rows].reshape(-1)
    )
    return KnnGraph(nb, sim)


def drift_distances(
    vectors: npt.NDArray[np.floating],
    ids: npt.NDArray[np.int64],
    unit: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """(m,) cosine distance of each ids[i]'s stored unit vector to unit[rows[i]], block by
    block (both are gathered a block at a time, not all at once)."""
    out = np.empty(ids.size, dtype=np.float32)
    for start in range(0, ids.size, BUILD_BLOCK):
        part = slice(start, start + BUILD_BLOCK)
        out[part] = measure_unit_drift(vectors[ids[part]], unit[rows[part]])
    return out


def unit_rows_in_place(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`vectors` normalised a block at a time, so that no full-size copy is made."""
    for start in range(0, vectors.shape[0], BUILD_BLOCK):
        block = vectors[start : start + BUILD_BLOCK]
        block[...] = normalize_rows(block)
    return vectors


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
    valid = (neighbors >= 0) & np.isfinite(similarities)
    return (
        np.where(valid, neighbors, NO_NEIGHBOR).astype(np.int32),
        np.where(valid, similarities, 0.0).astype(np.float32),
    )

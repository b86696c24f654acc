"""Queries answered by the k-NN graph itself, so that a job keeps no index after its build.

A sample that moved beyond its neighbourhood radius, or a new one, has no row a local join can
trust. An index (HNSW) answers it from its own links, but it costs a second copy of every
vector (1.16x the raw vectors at d = 384) for the few rows that need it each round. A plain
k-NN graph has no long links, though, so a walk that starts at a random node can stay in the
wrong cluster. So a search here starts from the best nodes of a fixed-size random routing
sample (exact dot products, ~0.4 MFLOP a query at 1024 nodes and d = 384), merged into the
row's own list, and then walks the graph by local joins: each iteration reads the rows of the
row's neighbours, a greedy best-first walk whose beam is the row's width.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.descent import best_distinct, join_rows, lists_of
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph

IdArray = npt.NDArray[np.int64]
# Random nodes every query is compared with first: enough that a query's cluster is among
# them (the round benchmark's data has 200 clusters: ~5 nodes each).
ROUTING_SAMPLE = 1024
# Walk steps after seeding: at 100k and 1M on the round benchmark's drift a third step
# changed almost no rows.
SEARCH_ITERATIONS = 3
# Queries scored against the routing sample per step (8192 x 1024 float32 = 32 MiB).
_SEED_BLOCK = 8192


def search_rows(
    graph: KnnGraph,
    vectors: npt.NDArray[np.floating],
    rows: npt.ArrayLike,
    present: npt.NDArray[np.bool_],
    rng: np.random.Generator,
    *,
    sample: int = ROUTING_SAMPLE,
    iterations: int = SEARCH_ITERATIONS,
    expand: int | None = None,
    in_place: bool = False,
) -> KnnGraph:
    """Find `rows`' neighbours afresh: seed each row from the routing sample, then walk.

    vectors: (N, d) current unit vectors; present: (N,) which nodes may be neighbours; the
    graph's similarities must be current (rows' own entries are kept as stored). The found
    edges are also offered to the nodes they name (reverse edges), as a join does. Returns a
    new graph; the input is untouched, unless `in_place` (its arrays are rewritten).
    """
    row_ids = np.unique(np.asarray(rows, dtype=np.int64))
    pool = np.flatnonzero(present).astype(np.int64)
    if row_ids.size == 0 or graph.k == 0 or pool.size < 2:
        return graph
    routes = pool if pool.size <= sample else np.sort(rng.choice(pool, sample, replace=False))
    seeded = seed_rows(graph, vectors, row_ids, routes, in_place=in_place)
    return join_rows(
        seeded,
        vectors,
        row_ids,
        present,
        rng,
        iterations=iterations,
        expand=expand,
        current=True,
        in_place=True,  # `seeded` is ours: a copy, or the caller's graph given in place
    )


def seed_rows(
    graph: KnnGraph,
    vectors: npt.NDArray[np.floating],
    rows: IdArray,
    routes: IdArray,
    *,
    in_place: bool = False,
) -> KnnGraph:
    """Each of `rows`' lists merged with its nearest `routes` (exact), best first, distinct,
    never itself. A new graph; the input is untouched, unless `in_place`."""
    nb, sim = lists_of(graph, in_place)
    width = graph.k
    take = min(width, routes.size)
    route_vectors = vectors[routes].astype(np.float32, copy=False)  # (s, d)
    for start in range(0, rows.size, _SEED_BLOCK):
        block = rows[start : start + _SEED_BLOCK]
        sims = vectors[block].astype(np.float32, copy=False) @ route_vectors.T  # (B, s)
        sims[block[:, None] == routes[None, :]] = -np.inf
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        own = nb[block].astype(np.int64)
        cand = np.concatenate([own, routes[top]], axis=1)
        cand_sims = np.concatenate(
            [np.where(own >= 0, sim[block], -np.inf), np.take_along_axis(sims, top, axis=1)],
            axis=1,
        ).astype(np.float32)
        cand[~np.isfinite(cand_sims)] = NO_NEIGHBOR
        nb[block], sim[block] = best_distinct(block, cand, cand_sims, width)
    return KnnGraph(nb, sim)

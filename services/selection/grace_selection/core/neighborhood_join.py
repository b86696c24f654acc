"""NN-descent's local join over every node's neighbourhood: one pass that improves every row.

`descent.join_rows` rebuilds a row from its neighbours' whole lists: about 2k rows of 2k read
per row. NN-descent (Dong, Charikar and Li, WWW 2011) gets there cheaper: each node v
introduces the members of its neighbourhood to each other. Its neighbourhood is its first
`listed` neighbours and up to `reverse` nodes that list it (nearer first), about 30 rows; every
pair of them is compared once and offered to both rows, and v's reverse neighbours are offered
to v. A row hears from every node that lists it or that it lists, so it meets its neighbours'
neighbours all the same, from ~30 rows read per node instead of ~280.

- The members and their pairs are read from the graph as it was when the pass began, and a row
  keeps the k best distinct of its own entries and every offer: the graph does not depend on
  the order of the nodes, on how they are split over threads, or on how the offers are
  batched. `ranks` (a walk of the graph) only decides what is in the cache.
- focus: only pairs with at least one focused node (NN-descent's "new" flags): after a round
  in which some nodes moved, the pairs of two unmoved nodes were compared before.
- The graph's similarities must be the current cosines (`descent.rescore_edges` ran): a
  node's own edges are offered back as stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import kernel_vectors, neighborhood_join_kernels
from grace_selection.core.descent import merge_edges
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph

IdArray = npt.NDArray[np.int64]
Offers = tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.float32]]
# Offers a thread gathers before the threads merge them (12 bytes each): 1M nodes' pass at
# 2k + 10 members gathers ~40M offers, merged in ~40 batches.
_OFFER_BUFFER = 1 << 20
# The compiled kernels release the GIL: nodes are split over this many threads, and the rows
# over as many for the merge (at least _THREAD_MIN_NODES nodes, else one thread).
_THREADS = max(1, min(8, os.cpu_count() or 1))
_THREAD_MIN_NODES = 4096
# The numpy path's gathered vectors and pair arrays per block of nodes.
_BLOCK_BYTES = 32 * 1024 * 1024


def neighborhood_join(
    graph: KnnGraph,
    vectors: npt.NDArray[np.floating],
    *,
    listed: int | None = None,
    reverse: int = 10,
    focus: npt.NDArray[np.bool_] | None = None,
    ranks: IdArray | None = None,
) -> KnnGraph:
    """One local-join pass over every node of `graph`; returns a new graph (the input is
    read, never written).

    vectors: (N, d) current unit vectors (compiled where `acceleration.kernel_vectors` takes
    them: C-ordered float32, or float16 on a CPU that converts half floats; else the numpy
    path: the same graph up to float32 rounding).
    listed: how many of a node's neighbours join its neighbourhood (None: the whole list);
    reverse: how many of the nodes that list it; focus: (N,) compare only pairs with a focused
    end; ranks: each node's place in a walk of the graph (`descent.walk_ranks`), the order in
    which the compiled path visits the nodes.
    """
    n, width = graph.neighbors.shape
    if reverse < 0:
        raise ValueError(f"reverse: must be >= 0, got {reverse}")
    listed = width if listed is None else max(0, min(listed, width))
    if n < 2 or width == 0 or listed + reverse < 1:
        return graph
    if focus is not None and focus.shape != (n,):
        raise ValueError(f"focus: must be an (N,) mask with N = {n}, got shape {focus.shape}")
    frozen_nb, frozen_sim = graph.neighbors, graph.similarities
    nb, sim = frozen_nb.copy(), frozen_sim.copy()
    worst = np.where(frozen_nb[:, -1] != NO_NEIGHBOR, frozen_sim[:, -1], -np.inf).astype(np.float32)
    mask = np.zeros(0, np.bool_) if focus is None else np.ascontiguousarray(focus, np.bool_)
    readable = kernel_vectors(vectors)
    if readable is not None:
        kernels = neighborhood_join_kernels()
        rev = kernels.reverse_lists(frozen_nb, reverse)
        nodes = (
            np.arange(n, dtype=np.int64)
            if ranks is None
            else np.argsort(ranks, kind="stable").astype(np.int64)
        )

        def gather(lo: int, hi: int, out: Offers) -> tuple[int, int]:
            stop, count = kernels.neighborhood_offers(
                frozen_nb, frozen_sim, worst, readable, rev, nodes, lo, hi, listed, mask, *out
            )
            return int(stop), int(count)

        def merge(lo: int, hi: int, batches: list[tuple[Offers, int]]) -> None:
            for (dst, src, sims), count in batches:
                kernels.merge_offers(nb, sim, dst, src, sims, count, lo, hi)

        _join_compiled(n, (listed + reverse + 1) ** 2, gather, merge)
    else:
        rev = _reverse_lists_numpy(frozen_nb, reverse)
        members = listed + reverse
        per_node = members * (vectors.shape[1] + 8 * members) * 4
        step = max(1, _BLOCK_BYTES // per_node)
        for start in range(0, n, step):
            block = np.arange(start, min(n, start + step), dtype=np.int64)
            dst, src, sims = _offers_numpy(
                frozen_nb, frozen_sim, worst, vectors, rev, block, listed, focus
            )
            merge_edges(nb, sim, dst, src, sims)
    return KnnGraph(nb, sim)


def _join_compiled(
    n: int,
    node_offers: int,
    gather: Callable[[int, int, Offers], tuple[int, int]],
    merge: Callable[[int, int, list[tuple[Offers, int]]], None],
) -> None:
    """Threads gather the offers of their slices of the nodes into their own buffers until
    one is full, then merge all buffers side by side, each thread the rows of its range."""
    threads = _THREADS if n >= _THREAD_MIN_NODES else 1
    bounds = [n * i // threads for i in range(threads + 1)]
    capacity = max(_OFFER_BUFFER, node_offers)  # a node's offers always fit an empty buffer
    buffers: list[Offers] = [
        (np.empty(capacity, np.int32), np.empty(capacity, np.int32), np.empty(capacity, np.float32))
        for _ in range(threads)
    ]
    place, ends = bounds[:-1], bounds[1:]
    with ThreadPoolExecutor(threads) as pool:
        while any(p < e for p, e in zip(place, ends, strict=True)):
            done = list(pool.map(gather, place, ends, buffers))
            place = [stop for stop, _ in done]
            batches = [(out, count) for out, (_, count) in zip(buffers, done, strict=True)]
            list(pool.map(merge, bounds[:-1], bounds[1:], [batches] * threads))


def _reverse_lists_numpy(nb: npt.NDArray[np.int32], width: int) -> npt.NDArray[np.int32]:
    """(N, width) for each node the nodes that list it, those that list it nearer first (then
    by id); -1 pads."""
    n, k = nb.shape
    rev = np.full((n, width), NO_NEIGHBOR, dtype=np.int32)
    listed = nb.T.reshape(-1).astype(np.int64)  # place in the list first, then the lister's id
    lister = np.tile(np.arange(n, dtype=np.int64), k)
    real = listed != NO_NEIGHBOR
    listed, lister = listed[real], lister[real]
    order = np.argsort(listed, kind="stable")
    listed, lister = listed[order], lister[order]
    starts = np.searchsorted(listed, np.arange(n))
    rank = np.arange(listed.size) - starts[listed]
    keep = rank < width
    rev[listed[keep], rank[keep]] = lister[keep]
    return rev


def _offers_numpy(
    nb: npt.NDArray[np.int32],
    sim: npt.NDArray[np.float32],
    worst: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.floating],
    rev: npt.NDArray[np.int32],
    block: IdArray,
    listed: int,
    focus: npt.NDArray[np.bool_] | None,
) -> tuple[IdArray, IdArray, npt.NDArray[np.float32]]:
    """The offers (dst, src, similarity) of the neighbourhoods of `block`'s nodes that beat
    row dst's `worst` similarity: v's listed edges back to the nodes it lists, v's reverse
    neighbours to v, and every pair of members each way."""
    forward = nb[block, :listed].astype(np.int64)  # (B, L)
    backward = rev[block].astype(np.int64)  # (B, R)
    backward[(backward[:, :, None] == forward[:, None, :]).any(axis=2)] = NO_NEIGHBOR
    members = np.concatenate([forward, backward], axis=1)  # (B, C); -1 where none
    real = members != NO_NEIGHBOR
    safe = np.where(real, members, 0)
    if focus is None:
        hot = real
        own = np.ones(block.size, dtype=np.bool_)
    else:
        hot = real & focus[safe]
        own = focus[block]
    member_worst = np.where(real, worst[safe], np.inf)
    gathered = vectors[safe].astype(np.float32, copy=False)  # (B, C, d)
    query = vectors[block].astype(np.float32, copy=False)
    to_v = np.matmul(gathered, query[:, :, None])[:, :, 0]  # (B, C)
    node = np.broadcast_to(block[:, None], members.shape)
    # v's edges back (stored cosines), and v's reverse neighbours to v.
    back = real[:, :listed] & (own[:, None] | hot[:, :listed])
    back &= sim[block, :listed] > member_worst[:, :listed]
    up = real[:, listed:] & (own[:, None] | hot[:, listed:])
    up &= to_v[:, listed:] > worst[block][:, None]
    # Every pair i < j of members, each way.
    first, second = np.triu_indices(members.shape[1], 1)
    pair_sims = np.matmul(gathered, gathered.transpose(0, 2, 1))[:, first, second]  # (B, P)
    pair = real[:, first] & real[:, second] & (hot[:, first] | hot[:, second])
    to_first = pair & (pair_sims > member_worst[:, first])
    to_second = pair & (pair_sims > member_worst[:, second])
    dst = np.concatenate(
        [
            members[:, :listed][back],
            node[:, listed:][up],
            members[:, first][to_first],
            members[:, second][to_second],
        ]
    )
    src = np.concatenate(
        [
            node[:, :listed][back],
            members[:, listed:][up],
            members[:, second][to_first],
            members[:, first][to_second],
        ]
    )
    sims = np.concatenate(
        [
            sim[block, :listed][back],
            to_v[:, listed:][up],
            pair_sims[to_first],
            pair_sims[to_second],
        ]
    ).astype(np.float32)
    return dst, src, sims

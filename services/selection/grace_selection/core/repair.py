"""Graph repair: keep the k-NN graph true while re-scored samples move in embedding space.

A re-scored sample comes back with a new embedding from the newest model. When it moved by more
than a cosine distance tau (`SelectionConfig.drift_threshold`), its neighbour list is out of date,
and so is every list that names it (the similarity stored there is its old one). Re-querying
only those rows keeps the repair proportional to the drift instead of rebuilding the graph:

1. `plan_repair` says which nodes drifted and which rows must be re-queried (the drifted nodes and
   their in-neighbours);
2. the caller queries its neighbour index for those rows and splices them in with
   `replace_rows`;
3. `insert_reverse_edges` lets each moved node enter the rows of its new neighbours when it is
   closer than their current worst neighbour, so that nodes near its new place can see it
   without a query of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph

IdArray = npt.NDArray[np.int64]

# Norms below this count as zero: such a vector has no direction to compare.
_TINY_NORM = 1e-12
# Float64 rounding leaves ~1e-16 on an unmoved vector; below this a distance is exactly 0, so
# that an unchanged embedding never drifts, even at threshold 0.
_ROUNDING = 1e-9
# A shared move shorter than this (unit vectors) is float noise, not drift: left alone, so that
# rows re-posted unchanged (a fixed input-embedding graph) stay bit for bit what they were.
_SHARED_DRIFT_FLOOR = 1e-6
_BLOCK_ROWS = 65_536


@dataclass(frozen=True, slots=True, eq=False)
class RepairPlan:
    """drifted: sorted int64 ids whose embedding moved beyond the threshold.
    relink: sorted int64 ids whose neighbour rows must be re-queried (drifted plus every row that
        lists a drifted node); a superset of `drifted`.
    distances: (m,) float32 cosine distance of each input id, in the order given.
    """

    drifted: IdArray
    relink: IdArray
    distances: npt.NDArray[np.float32]


def measure_drift(old: npt.ArrayLike, new: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Row-wise cosine distance 1 - cos(old_i, new_i) in [0, 2], (m,) float32.

    A zero vector against a non-zero one counts as distance 1 (no shared direction), two zero
    vectors as 0.
    """
    a = _as_matrix("old_embeddings", old)
    b = _as_matrix("new_embeddings", new)
    if a.shape != b.shape:
        raise ValueError(
            f"new_embeddings: must have the shape of old_embeddings {a.shape}, got {b.shape}"
        )
    norm_a = np.linalg.norm(a, axis=1)  # (m,)
    norm_b = np.linalg.norm(b, axis=1)
    both = (norm_a > _TINY_NORM) & (norm_b > _TINY_NORM)
    dot = np.einsum("ij,ij->i", a, b)
    cosine = np.divide(dot, norm_a * norm_b, out=np.zeros_like(dot), where=both)
    neither = (norm_a <= _TINY_NORM) & (norm_b <= _TINY_NORM)
    cosine[neither] = 1.0
    distance: npt.NDArray[np.float64] = np.clip(1.0 - cosine, 0.0, 2.0)
    distance[distance < _ROUNDING] = 0.0
    return distance.astype(np.float32)


def remove_shared_drift(
    old: npt.NDArray[np.floating],
    new: npt.NDArray[np.floating],
    unaligned: npt.NDArray[np.floating],
    *,
    min_rows: int = 8,
) -> npt.NDArray[np.float32]:
    """`unaligned` unit vectors moved back by the drift that the re-embedded rows share.

    old, new: (m, d) the previous and the newest unit embeddings of the m re-embedded samples
    the graph already holds; unaligned: (p, d) every newest embedding of the round (those m
    rows and the samples new to the graph), all from the newest model. Returns (p, d) float32
    unit vectors, `unaligned` minus the mean of new - old, re-normalised.

    Why: training moves every sample's hidden state the same way. The pooled states of a small
    language model have cosines of 0.9999 with one another, so that shared move is larger than
    the distances between samples: re-embedded rows then sit nearer one another than any row
    embedded by an older model, the graph links fresh rows only to fresh rows, and estimation
    has no fresh neighbour to propagate from. Taking the shared move out puts every row back
    in one frame (the graph's first), and what is left of a row's drift is its own.
    Fewer than `min_rows` rows are too few to tell a shared move from the rows' own; the
    vectors come back unchanged then, as they do when nothing moved in common.
    """
    rows = np.arange(old.shape[0], dtype=np.int64)
    return realign(old, rows, new, rows, unaligned, min_rows=min_rows)


def realign(
    stored: npt.NDArray[np.floating],
    stored_ids: npt.NDArray[np.int64],
    fresh: npt.NDArray[np.floating],
    fresh_rows: npt.NDArray[np.int64],
    unaligned: npt.NDArray[np.floating],
    *,
    min_rows: int = 8,
    overwrite: bool = False,
) -> npt.NDArray[np.float32]:
    """`remove_shared_drift` with the pairs named, not gathered: old row i is
    stored[stored_ids[i]], new row i is fresh[fresh_rows[i]]. The rows are read a block at a
    time, so that a keeper holding (N, d) vectors never copies all m re-embedded rows (at 1M x
    384 and rho 0.3, 460 MB each for the old and the new).

    overwrite: align a writable float32 `unaligned` in place and return it (a caller that owns
    the array saves a copy of every fresh row: 0.3x the raw vectors at rho 0.3)."""
    out = np.asarray(unaligned, dtype=np.float32)
    rows = stored_ids.shape[0]
    if rows < min_rows:
        return out
    total = np.zeros(stored.shape[1], dtype=np.float64)
    for start in range(0, rows, _BLOCK_ROWS):
        pair = slice(start, start + _BLOCK_ROWS)
        # Summed into float64 as numpy reads them: no float64 copy of either block.
        total += np.sum(fresh[fresh_rows[pair]], axis=0, dtype=np.float64)
        total -= np.sum(stored[stored_ids[pair]], axis=0, dtype=np.float64)
    shared = (total / rows).astype(np.float32)
    if float(np.linalg.norm(shared)) < _SHARED_DRIFT_FLOOR:
        return out
    in_place = overwrite and out is unaligned and out.flags.writeable
    aligned: npt.NDArray[np.float32] = out if in_place else np.array(out, copy=True)
    for start in range(0, aligned.shape[0], _BLOCK_ROWS):
        block = aligned[start : start + _BLOCK_ROWS]
        block -= shared
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), _TINY_NORM)
    return aligned


def plan_repair(
    graph: KnnGraph,
    ids: npt.ArrayLike,
    old_embeddings: npt.ArrayLike,
    new_embeddings: npt.ArrayLike,
    threshold: float,
) -> RepairPlan:
    """Which of the re-embedded `ids` drifted beyond `threshold`, and which rows to re-query.

    ids: (m,) unique sample ids; old_embeddings, new_embeddings: (m, d), row r belongs to ids[r].
    threshold: tau, the cosine distance a node must exceed to count as drifted (0 <= tau <= 2).
    """
    if not np.isfinite(threshold) or not 0.0 <= threshold <= 2.0:
        raise ValueError(f"threshold: must be a cosine distance in [0, 2], got {threshold!r}")
    id_arr = _as_ids("ids", ids, graph.n)
    distances = measure_drift(old_embeddings, new_embeddings)
    if distances.shape[0] != id_arr.shape[0]:
        raise ValueError(
            f"old_embeddings: needs one row per id ({id_arr.shape[0]}), got {distances.shape[0]}"
        )
    drifted = np.sort(id_arr[distances > threshold])
    return RepairPlan(drifted=drifted, relink=find_relink_rows(graph, drifted), distances=distances)


def find_relink_rows(graph: KnnGraph, drifted: npt.ArrayLike) -> IdArray:
    """Sorted int64 ids of the drifted nodes and of every node whose row lists one of them."""
    drifted_ids = _as_ids("drifted", drifted, graph.n)
    # A lookup table of n + 1 slots: padding (-1) lands on the last one, which stays False.
    moved = np.zeros(graph.n + 1, dtype=np.bool_)
    moved[drifted_ids] = True
    lists_moved = np.zeros(graph.n, dtype=np.bool_)
    if graph.k:
        lists_moved |= moved[graph.neighbors].any(axis=1)
    lists_moved[drifted_ids] = True
    return np.flatnonzero(lists_moved).astype(np.int64)


def replace_rows(
    graph: KnnGraph,
    rows: npt.ArrayLike,
    neighbors: npt.ArrayLike,
    similarities: npt.ArrayLike,
) -> KnnGraph:
    """A new graph with the given rows swapped for freshly queried ones; the input is untouched.

    rows: (m,) unique ids; neighbors: (m, k) int ids (-1 pads); similarities: (m, k) cosine.
    """
    row_ids = _as_ids("rows", rows, graph.n)
    nb = np.asarray(neighbors)
    sim = np.asarray(similarities)
    expected = (row_ids.shape[0], graph.k)
    if nb.shape != expected or not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbors: must be an integer array of shape {expected}, got {nb.shape}")
    if sim.shape != expected:
        raise ValueError(f"similarities: must have shape {expected}, got {sim.shape}")
    if nb.size and (nb.min() < NO_NEIGHBOR or nb.max() >= graph.n):
        raise ValueError(f"neighbors: ids must be in [-1, {graph.n - 1}]")
    if bool(np.any(nb == row_ids[:, None])):
        raise ValueError("neighbors: a row lists itself; drop self-matches from the query result")
    new_nb = graph.neighbors.copy()
    new_sim = graph.similarities.copy()
    new_nb[row_ids] = nb
    new_sim[row_ids] = np.where(nb == NO_NEIGHBOR, 0.0, sim)
    return KnnGraph.from_arrays(new_nb, new_sim)


def insert_reverse_edges(graph: KnnGraph, rows: npt.ArrayLike) -> KnnGraph:
    """Let each node in `rows` enter its neighbours' rows where it beats their worst entry.

    For every edge i -> j with i in `rows`, i replaces the weakest entry of j's row (padding
    first) when sim_ij is larger and j does not list i yet. At most one insertion per row j per
    call, the most similar candidate, which keeps the update vectorised and every row's entries
    unique. Returns a new graph.
    """
    row_ids = _as_ids("rows", rows, graph.n)
    if row_ids.size == 0 or graph.k == 0:
        return graph
    src = np.repeat(row_ids, graph.k)  # (m * k,) the moved node i
    dst = graph.neighbors[row_ids].reshape(-1).astype(np.int64)  # (m * k,) its neighbour j
    sim = graph.similarities[row_ids].reshape(-1).astype(np.float64)
    real = dst != NO_NEIGHBOR
    src, dst, sim = src[real], dst[real], sim[real]
    already = (graph.neighbors[dst] == src[:, None]).any(axis=1)
    src, dst, sim = src[~already], dst[~already], sim[~already]
    if src.size == 0:
        return graph
    # Best candidate per target row: sort by target, then by similarity descending.
    order = np.lexsort((-sim, dst))
    src, dst, sim = src[order], dst[order], sim[order]
    first = np.ones(dst.shape[0], dtype=np.bool_)
    first[1:] = dst[1:] != dst[:-1]
    src, dst, sim = src[first], dst[first], sim[first]
    # The weakest slot of each target row; padding counts as -inf so it fills first.
    target_sims = np.where(
        graph.neighbors[dst] == NO_NEIGHBOR, -np.inf, graph.similarities[dst].astype(np.float64)
    )
    slot = np.argmin(target_sims, axis=1)
    better = sim > target_sims[np.arange(dst.shape[0]), slot]
    new_nb = graph.neighbors.copy()
    new_sim = graph.similarities.copy()
    new_nb[dst[better], slot[better]] = src[better]
    new_sim[dst[better], slot[better]] = sim[better]
    return KnnGraph.from_arrays(new_nb, new_sim)


def _as_matrix(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be a 2-D (m, d) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: holds NaN or inf; send finite embeddings")
    return arr


def _as_ids(name: str, values: npt.ArrayLike, n: int) -> IdArray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: must be a 1-D integer id array, got {arr.dtype} {arr.shape}")
    ids = arr.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"{name}: ids must be in [0, {n - 1}]")
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise ValueError(f"{name}: ids must be unique")
    return ids

"""Helpers shared by the neighbour indexes: top-k per row and raw results to a KnnGraph."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.graph import KnnGraph


def top_k_rows(
    sims: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The k largest entries of each row, best first; -1 / -inf where a row has fewer."""
    n_cols = sims.shape[1]
    take = min(k, n_cols)
    part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
    part_sims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_sims, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best = np.take_along_axis(part_sims, order, axis=1).astype(np.float32)
    ids[~np.isfinite(best)] = -1
    if take < k:
        pad = k - take
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return ids, best


def graph_from_neighbors(
    ids: npt.NDArray[np.int64],
    sims: npt.NDArray[np.float32],
    present: npt.NDArray[np.bool_],
    k: int,
) -> KnnGraph:
    """Drop each row's own id (or its last entry when absent), pad absent rows with -1."""
    n = present.shape[0]
    rows = np.arange(ids.shape[0])[:, None]
    is_self = ids == rows
    # Where self is missing (duplicate vectors, approximate search), drop the worst entry.
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    neighbors = ids[keep].reshape(ids.shape[0], ids.shape[1] - 1)[:, :k]
    similarities = sims[keep].reshape(ids.shape[0], ids.shape[1] - 1)[:, :k]
    neighbors = np.where(neighbors >= 0, neighbors, -1)
    similarities = np.where(neighbors >= 0, similarities, 0.0)
    neighbors[~present[: ids.shape[0]]] = -1
    similarities[~present[: ids.shape[0]]] = 0.0
    graph_ids = np.full((n, k), -1, dtype=np.int32)
    graph_sims = np.zeros((n, k), dtype=np.float32)
    graph_ids[: ids.shape[0]] = neighbors
    graph_sims[: ids.shape[0]] = np.clip(similarities, -1.0, 1.0)
    return KnnGraph(graph_ids, graph_sims)

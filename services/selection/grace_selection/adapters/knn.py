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


# Rows converted at a time: the boolean masks and gathered copies of a block stay a few MB, so
# the graph costs its own (n, k) arrays and not several times their size in transients.
_GRAPH_BLOCK_ROWS = 65_536


def graph_from_neighbors(
    ids: npt.NDArray[np.integer],
    sims: npt.NDArray[np.float32],
    present: npt.NDArray[np.bool_],
    k: int,
) -> KnnGraph:
    """Drop each row's own id (or its last entry when absent), pad absent rows with -1.

    ids, sims: (rows, w) answers of rows 0..rows-1, best first, -1 pad; rows <= present.size.
    """
    graph_ids, graph_sims = empty_graph_arrays(present.shape[0], k)
    for start in range(0, ids.shape[0], _GRAPH_BLOCK_ROWS):
        stop = min(ids.shape[0], start + _GRAPH_BLOCK_ROWS)
        graph_rows_into(ids[start:stop], sims[start:stop], start, graph_ids, graph_sims)
        absent = ~present[start:stop]
        graph_ids[start:stop][absent] = -1
        graph_sims[start:stop][absent] = 0.0
    return KnnGraph(graph_ids, graph_sims)


def empty_graph_arrays(n: int, k: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The (n, k) neighbour ids (-1) and similarities (0) that `graph_rows_into` fills."""
    return np.full((n, k), -1, dtype=np.int32), np.zeros((n, k), dtype=np.float32)


def graph_rows_into(
    ids: npt.NDArray[np.integer],
    sims: npt.NDArray[np.float32],
    rows: int | np.integer | npt.NDArray[np.int64],
    graph_ids: npt.NDArray[np.int32],
    graph_sims: npt.NDArray[np.float32],
) -> None:
    """Write some rows of a (n, k) graph from their (len(ids), w) answers: each row's own id
    dropped (where it is missing, the worst entry), -1 / 0 where no neighbour.

    rows: the graph rows the answers belong to, in order; an int means rows..rows+len(ids).
    """
    count, width = ids.shape
    k = graph_ids.shape[1]
    first = int(rows) if np.ndim(rows) == 0 else None  # numpy integers count as a start too
    own = np.arange(first, first + count) if first is not None else np.asarray(rows)
    is_self = ids == own[:, None]
    # Where self is missing (duplicate vectors, approximate search), drop the worst entry.
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    take = min(k, width - 1)
    neighbors = ids[keep].reshape(count, width - 1)[:, :take]
    similarities = sims[keep].reshape(count, width - 1)[:, :take]
    valid = neighbors >= 0
    out = slice(first, first + count) if first is not None else own
    graph_ids[out, :take] = np.where(valid, neighbors, -1)
    graph_sims[out, :take] = np.clip(np.where(valid, similarities, 0.0), -1, 1)

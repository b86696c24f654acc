"""How good is an approximate k-NN graph? recall@k on a sample of rows against exact search.

The graph keeper refreshes its graph by local joins round after round; this is how it notices
when the refreshed graph has drifted too far from the true one (and rebuilds).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import join_kernels, kernel_vectors
from grace_selection.core.graph import KnnGraph

# Rows sampled for the recall check after a refresh: 64 x k = 640 neighbour slots put the
# estimate within about +-0.02 of the graph's recall; at 1M x 384 the exact search over them
# is ~25 GFLOP: 0.5-0.8 s here (about 0.05 s at 100k).
_RECALL_ROWS = 64
# Columns of the exact search per step: 64 x 65,536 similarities, and one float32 block of
# the vectors (96 MiB at d = 384) when they are stored as float16.
_BLOCK_ROWS = 65_536


def sampled_recall(
    graph: KnnGraph,
    vectors: npt.NDArray[np.floating],
    present: npt.NDArray[np.bool_],
    seed: int,
    rows: int = _RECALL_ROWS,
) -> float | None:
    """recall@k of `graph` on `rows` random rows that have embeddings, against exact search
    over `vectors` (N, d) unit rows: the share of each row's true k nearest it lists. None
    when there are too few rows to tell. Blocked over N, so that float16 vectors never need
    a float32 copy of the whole matrix."""
    ids = np.flatnonzero(present)
    k = graph.k
    if k == 0 or ids.size <= 2 * k:
        return None
    sample = np.sort(np.random.default_rng([seed, 0x5EC]).choice(ids, min(rows, ids.size), False))
    queries = vectors[sample].astype(np.float32)
    best_ids = np.full((sample.size, k), -1, dtype=np.int64)
    best_sims = np.full((sample.size, k), -np.inf, dtype=np.float32)
    dense = ids.size == vectors.shape[0]  # every row embedded: slices, no gathered copies
    # float16 rows are widened into one reused block by the compiled conversion where there
    # is one (numpy's allocates and converts each block, about 1 s of a check at 1M).
    bits = kernel_vectors(vectors) if vectors.dtype == np.float16 else None
    shape = (min(_BLOCK_ROWS, ids.size), vectors.shape[1])
    wide = None if bits is None else np.empty(shape, dtype=np.float32)
    for lo in range(0, ids.size, _BLOCK_ROWS):
        cols = ids[lo : lo + _BLOCK_ROWS]
        if bits is not None and wide is not None:
            block = wide[: cols.size]
            join_kernels().widen_rows(bits[lo : lo + cols.size] if dense else bits[cols], block)
        else:
            block = vectors[lo : lo + cols.size] if dense else vectors[cols]
        sims = queries @ block.astype(np.float32, copy=False).T  # (rows, block)
        # Never a row's own neighbour: cols is sorted, so each sampled row is found by search.
        at = np.minimum(np.searchsorted(cols, sample), cols.size - 1)
        own = np.flatnonzero(cols[at] == sample)
        sims[own, at[own]] = -np.inf
        # The block's best k of each row first, then merged with the best so far: the merge
        # works on (rows, 2k), not on a copy of the whole block.
        take = min(k, cols.size)
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        pool_ids = np.concatenate([best_ids, cols[top]], axis=1)
        pool_sims = np.concatenate([best_sims, np.take_along_axis(sims, top, axis=1)], axis=1)
        keep = np.argpartition(-pool_sims, k - 1, axis=1)[:, :k]
        best_ids = np.take_along_axis(pool_ids, keep, axis=1)
        best_sims = np.take_along_axis(pool_sims, keep, axis=1)
    listed = graph.neighbors[sample]
    hits = sum(np.intersect1d(best_ids[i], listed[i]).size for i in range(sample.size))
    return float(hits) / float(k * sample.size)

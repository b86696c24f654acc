"""CRAIG-style weights: how many samples each pick stands for (Mirzasoleiman et al., 2020).

Training on pick c with weight w_c approximates training on the w_c samples it represents, so
the weighted coreset loss stays an estimate of the full-data loss. Each sample is assigned to
its most similar selected neighbour over the k-NN graph, in either edge direction (itself if
selected; among equal similarities the lower pick id). Samples with no selected neighbour are
spread evenly over all picks, so the weights always sum to N.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.acceleration import kernels, numba_enabled
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph


def compute_coverage_weights(
    graph: KnnGraph, picks: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Weights aligned with `picks` (unique, (K,) int64, K >= 1): (K,) float32, summing to N."""
    n = graph.n
    if picks.shape[0] == 0:
        raise ValueError("picks must not be empty: there is nothing to carry the weight")
    if numba_enabled():
        owner: npt.NDArray[np.int64] = kernels().coverage_owner(
            np.ascontiguousarray(graph.neighbors),
            np.ascontiguousarray(graph.similarities),
            np.ascontiguousarray(picks, dtype=np.int64),
        )
    else:
        owner = _coverage_owner_numpy(graph, picks)

    represented = owner < n
    slot_of = np.empty(n, dtype=np.int64)  # position of each pick in `picks`
    slot_of[picks] = np.arange(picks.shape[0])
    weights = np.bincount(slot_of[owner[represented]], minlength=picks.shape[0]).astype(np.float64)
    weights += (n - int(represented.sum())) / picks.shape[0]
    return weights.astype(np.float32)


def _coverage_owner_numpy(graph: KnnGraph, picks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """(N,) int64: each sample's most similar pick over either edge direction (among equal
    similarities the lower pick id), each pick itself, and n for a sample with no pick near."""
    n, k = graph.n, graph.k
    selected = np.zeros(n, dtype=np.bool_)
    selected[picks] = True
    nb, sim = graph.neighbors, graph.similarities
    valid = nb != NO_NEIGHBOR

    # Candidates (sample, pick, similarity) from both directions of every edge touching a pick.
    out_edge = valid & selected[np.where(valid, nb, 0)]  # sample i lists pick j
    sample_out = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], (n, k))[out_edge]
    pick_out = nb[out_edge].astype(np.int64)
    sim_out = sim[out_edge].astype(np.float64)
    in_edge = valid[picks]  # pick j lists sample i
    sample_in = nb[picks][in_edge].astype(np.int64)
    pick_in = np.broadcast_to(picks[:, None], (picks.shape[0], k))[in_edge]
    sim_in = sim[picks][in_edge].astype(np.float64)
    sample = np.concatenate([sample_out, sample_in])
    pick = np.concatenate([pick_out, pick_in])
    similarity = np.concatenate([sim_out, sim_in])

    best = np.full(n, -np.inf)
    np.maximum.at(best, sample, similarity)
    tied_best = similarity == best[sample]
    owner = np.full(n, n, dtype=np.int64)  # n means "no selected neighbour"
    np.minimum.at(owner, sample[tied_best], pick[tied_best])
    owner[picks] = picks
    return owner

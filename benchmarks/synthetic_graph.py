"""Synthetic inputs for the selection benchmark: a clustered k-NN graph built directly (no index),
clustered embeddings for the HNSW timing, and scores.

The graph imitates what an index returns on clustered data, at any N in a few seconds:
clusters with Zipf-like popularity; inside a cluster the samples sit on a ring in random order,
each lists its nearest ring neighbours (mutual edges, like real near neighbours) and, for
about 30% of its slots, a far member of its own cluster (mostly one-way edges, like the hub
links of a real k-NN graph). Similarity falls with ring distance and carries a small noise term
that is a hash of the unordered pair, so sim(i, j) == sim(j, i) as for cosine similarity.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core import KnnGraph, ScoreTable

SAMPLES_PER_CLUSTER = 500
FAR_SHARE = 0.3


def make_clustered_graph(n: int, k: int, seed: int) -> KnnGraph:
    """(N, k) neighbours sorted by similarity, best first; -1 pads rows of tiny clusters."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // SAMPLES_PER_CLUSTER)
    popularity = 1.0 / np.arange(1, clusters + 1) ** 0.8
    label = rng.choice(clusters, size=n, p=popularity / popularity.sum())
    sizes = np.bincount(label, minlength=clusters)
    start = np.cumsum(sizes) - sizes
    # Ring slot p holds sample order[p]; slots of one cluster are contiguous, samples shuffled.
    order = np.lexsort((rng.random(n), label))
    slot_cluster = label[order]
    base = start[slot_cluster][:, None]  # (N, 1) first slot of the cluster
    size = sizes[slot_cluster][:, None]  # (N, 1)
    position = np.arange(n)[:, None] - base  # (N, 1) place on the ring

    half = k // 2
    offsets = np.concatenate([np.arange(1, half + 1), -np.arange(1, k - half + 1)])  # (k,)
    step = np.broadcast_to(offsets, (n, k)).copy()
    far = rng.random((n, k)) < FAR_SHARE
    span = np.maximum(size - k - 1, 1)
    step[far] = (half + 1 + (rng.random((n, k)) * span).astype(np.int64))[far]
    local = (position + step) % size  # (N, k) ring position of each neighbour
    gap = np.abs(local - position)
    ring_distance = np.minimum(gap, size - gap)  # (N, k), 0 only for self
    neighbor_slot = base + local

    a = np.minimum(np.arange(n)[:, None], neighbor_slot).astype(np.uint64)
    b = np.maximum(np.arange(n)[:, None], neighbor_slot).astype(np.uint64)
    mixed = a * np.uint64(0x9E3779B97F4A7C15) ^ b * np.uint64(0xC2B2AE3D27D4EB4F)
    noise = (mixed >> np.uint64(40)).astype(np.float64) / float(1 << 24)  # (N, k) in [0, 1)
    sim = 0.45 + 0.5 * np.exp(-(ring_distance - 1) / k) - 0.05 * noise

    invalid = ring_distance == 0
    for t in range(1, k):  # a repeated neighbour keeps its first slot only
        invalid[:, t] |= (neighbor_slot[:, :t] == neighbor_slot[:, t : t + 1]).any(axis=1)
    neighbors = np.where(invalid, -1, order[neighbor_slot])
    sim = np.where(invalid, 0.0, sim)
    by_similarity = np.argsort(np.where(invalid, -np.inf, -sim), axis=1, kind="stable")
    out_nb = np.empty((n, k), dtype=np.int32)
    out_sim = np.empty((n, k), dtype=np.float32)
    out_nb[order] = np.take_along_axis(neighbors, by_similarity, axis=1)
    out_sim[order] = np.take_along_axis(sim, by_similarity, axis=1)
    return KnnGraph(out_nb, out_sim)


def make_scores(n: int, seed: int) -> ScoreTable:
    """Heavy-tailed importance and loss, 5% never scored."""
    rng = np.random.default_rng(seed + 1)
    importance = rng.gamma(2.0, size=n)
    importance[rng.random(n) < 0.05] = np.nan
    loss = rng.lognormal(size=n)
    return ScoreTable.from_arrays(loss, importance, np.zeros(n))


def make_clustered_vectors(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    """(N, dim) float32 unit vectors around n/500 random centres (about 0.7 cosine to them)."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // SAMPLES_PER_CLUSTER)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    block = 65536
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        noise = rng.standard_normal((hi - lo, dim)).astype(np.float32) / np.sqrt(dim)
        out[lo:hi] = centres[rng.integers(0, clusters, hi - lo)] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out

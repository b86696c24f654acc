"""core.graph_search: the k-NN graph answers queries itself, so the keeper can drop its index:
new samples (no row at all) and samples that moved far are found from a routing sample and a
walk, in clustered data where a walk from a random node alone would stay in the wrong
cluster."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_selection.core.descent import rescore_edges
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.graph_search import search_rows, seed_rows

F32 = npt.NDArray[np.float32]
K = 8


def unit(x: npt.NDArray[np.floating]) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator) -> F32:
    centres = 4.0 * rng.standard_normal((clusters, dim))
    return unit(centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)))


def exact(vectors: F32, present: npt.NDArray[np.bool_], k: int) -> KnnGraph:
    sims = vectors @ vectors.T
    sims[:, ~present] = -np.inf
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    nb = order.astype(np.int32)
    sim = np.take_along_axis(sims, order, axis=1).astype(np.float32)
    nb[~present] = NO_NEIGHBOR
    sim[~present] = 0.0
    return KnnGraph(nb, sim)


def recall(found: npt.NDArray[np.int32], truth: npt.NDArray[np.int32], k: int) -> float:
    hits = sum(np.intersect1d(f[:k], t[:k]).size for f, t in zip(found, truth, strict=True))
    return hits / (k * len(found))


def test_new_samples_are_found_from_an_empty_row() -> None:
    rng = np.random.default_rng(0)
    vectors = clustered(3000, 24, 40, rng)
    new = np.sort(rng.choice(3000, 150, replace=False))
    present = np.ones(3000, np.bool_)
    present[new] = False
    graph = exact(vectors, present, 2 * K)  # the graph before the new samples arrived
    present[new] = True
    found = search_rows(graph, vectors, new, present, rng, sample=256)
    truth = exact(vectors, present, K).neighbors
    assert recall(found.neighbors[new], truth[new], K) >= 0.95
    # Their edges were offered back: most old rows near a new sample now list it.
    listed = np.isin(found.neighbors[:3000], new).sum()
    assert listed >= 0.8 * np.isin(truth, new).sum()


def test_a_far_moved_sample_is_found_at_its_new_place() -> None:
    rng = np.random.default_rng(1)
    vectors = clustered(2000, 16, 20, rng)
    present = np.ones(2000, np.bool_)
    graph = exact(vectors, present, 2 * K)
    moved = np.arange(0, 2000, 40, dtype=np.int64)
    # Each moved sample jumps onto another sample of some other place: its old row says
    # nothing about its new neighbours.
    targets = rng.permutation(2000)[: moved.size]
    vectors = vectors.copy()
    vectors[moved] = unit(vectors[targets] + 0.05 * rng.standard_normal((moved.size, 16)))
    flags = np.zeros(2000, np.bool_)
    flags[moved] = True
    graph = rescore_edges(graph, vectors, flags)
    found = search_rows(graph, vectors, moved, present, rng, sample=128)
    truth = exact(vectors, present, K).neighbors
    assert recall(found.neighbors[moved], truth[moved], K) >= 0.9
    assert recall(graph.neighbors[moved], truth[moved], K) < 0.2  # the old rows were useless


def test_seeded_rows_are_distinct_sorted_and_never_list_themselves() -> None:
    rng = np.random.default_rng(2)
    vectors = clustered(500, 8, 5, rng)
    present = np.ones(500, np.bool_)
    graph = exact(vectors, present, K)
    rows = np.arange(0, 500, 7, dtype=np.int64)
    routes = np.sort(np.concatenate([rows[:20], rng.choice(500, 60, replace=False)]))
    routes = np.unique(routes)
    seeded = seed_rows(graph, vectors, rows, routes)
    for row in rows:
        nb, sim = seeded.neighbors[row], seeded.similarities[row]
        real = nb[nb >= 0]
        assert row not in real
        assert np.unique(real).size == real.size
        assert np.all(np.diff(sim[: real.size]) <= 0)
        np.testing.assert_allclose(sim[: real.size], vectors[real] @ vectors[row], atol=1e-5)
        # The row's list is at least as good as before, and as good as its best route.
        assert sim[0] >= graph.similarities[row, 0] - 1e-6
        others = routes[routes != row]
        assert sim[0] >= (vectors[others] @ vectors[row]).max() - 1e-6
    untouched = np.setdiff1d(np.arange(500), rows)
    np.testing.assert_array_equal(seeded.neighbors[untouched], graph.neighbors[untouched])


def test_nothing_to_search_returns_the_graph() -> None:
    rng = np.random.default_rng(3)
    vectors = clustered(50, 4, 2, rng)
    graph = exact(vectors, np.ones(50, np.bool_), K)
    assert search_rows(graph, vectors, [], np.ones(50, np.bool_), rng) is graph


def test_an_in_place_search_gives_the_graph_of_a_copying_one() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((400, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    ids = np.argsort(-sims, axis=1)[:, :6]
    graph = KnnGraph.from_arrays(ids, np.take_along_axis(sims, ids, axis=1))
    rows = np.arange(0, 400, 9, dtype=np.int64)
    graph.neighbors[rows] = NO_NEIGHBOR  # rows to be found afresh
    graph.similarities[rows] = 0.0
    present = np.ones(400, dtype=np.bool_)
    copied = search_rows(graph, vectors, rows, present, np.random.default_rng(0), sample=64)
    own = KnnGraph(graph.neighbors.copy(), graph.similarities.copy())
    found = search_rows(
        own, vectors, rows, present, np.random.default_rng(0), sample=64, in_place=True
    )
    assert np.shares_memory(found.neighbors, own.neighbors)
    np.testing.assert_array_equal(found.neighbors, copied.neighbors)
    np.testing.assert_array_equal(found.similarities, copied.similarities)

"""core.descent: local joins keep a drifting k-NN graph close to the exact one, round after
round; edges offered back keep rows sorted, distinct and self-free; re-scored edges match the
current vectors."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.core import acceleration, descent
from grace_selection.core.descent import join_rows, measure_unit_drift, merge_edges, rescore_edges
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.repair import find_relink_rows, measure_drift

F32 = npt.NDArray[np.float32]
P = ParamSpec("P")
R = TypeVar("R")


def needs_numba_mark() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec("numba") is None,
        reason="numba (the `fast` extra) not installed",
    )


def unit(x: npt.NDArray[np.floating]) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def clustered(n: int, dim: int, rng: np.random.Generator) -> F32:
    centres = 3.0 * rng.standard_normal((12, dim))
    return unit(centres[rng.integers(0, 12, n)] + rng.standard_normal((n, dim)))


def exact(vectors: F32, k: int) -> KnnGraph:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return KnnGraph.from_arrays(ids, np.take_along_axis(sims, ids, axis=1))


def recall(graph: KnnGraph, oracle: KnnGraph) -> float:
    pairs = zip(graph.neighbors, oracle.neighbors, strict=True)
    hits = sum(np.intersect1d(a, b).size for a, b in pairs)
    return hits / oracle.neighbors.size


def check_rows(graph: KnnGraph) -> None:
    for i, (row, sims) in enumerate(zip(graph.neighbors, graph.similarities, strict=True)):
        real = row[row != NO_NEIGHBOR]
        assert (row[: real.size] == real).all(), "padding sits at the end"
        assert np.unique(real).size == real.size
        assert i not in real
        assert (np.diff(sims[: real.size]) <= 1e-6).all(), "best first"


def test_joins_keep_recall_across_drifting_rounds() -> None:
    rng = np.random.default_rng(0)
    n, dim, k = 800, 16, 10
    vectors = clustered(n, dim, rng)
    graph = exact(vectors, k)
    present = np.ones(n, dtype=np.bool_)
    for _ in range(6):
        moved_ids = rng.choice(n, size=n * 3 // 10, replace=False)
        old = vectors.copy()
        # Moves of about half the neighbourhood radius (the keeper re-queries farther ones).
        vectors[moved_ids] = unit(vectors[moved_ids] + 0.08 * rng.standard_normal((240, dim)))
        drift = 1.0 - np.einsum("ij,ij->i", old[moved_ids], vectors[moved_ids])
        moved = np.zeros(n, dtype=np.bool_)
        moved[moved_ids] = True
        graph = rescore_edges(graph, vectors, moved)
        rows = find_relink_rows(graph, moved_ids[drift > 0.01])
        graph = join_rows(graph, vectors, rows, present, rng)
        check_rows(graph)
        assert recall(graph, exact(vectors, k)) >= 0.95
    # The stored similarities are the current vectors' cosines.
    real = graph.neighbors != NO_NEIGHBOR
    rows_ix = np.nonzero(real)[0]
    expected = np.einsum("ij,ij->i", vectors[rows_ix], vectors[graph.neighbors[real]])
    np.testing.assert_allclose(graph.similarities[real], expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["0", pytest.param("1", marks=needs_numba_mark())])
def test_rescoring_leaves_no_stale_similarity(mode: str) -> None:
    """A moved row's edges to unmoved neighbours are stale too, not only the edges that name
    a moved neighbour: once rescored, every stored similarity is the current cosine."""
    graph, vectors, moved, _ = drifted_round(4, 500, 12, 8)
    rescored = run_with(mode, rescore_edges, graph, vectors, moved)
    check_rows(rescored)
    real = rescored.neighbors != NO_NEIGHBOR
    rows_ix = np.nonzero(real)[0]
    expected = np.einsum("ij,ij->i", vectors[rows_ix], vectors[rescored.neighbors[real]])
    np.testing.assert_allclose(rescored.similarities[real], expected, atol=1e-5)


def test_join_rebuilds_scrambled_rows_from_their_neighbourhood() -> None:
    rng = np.random.default_rng(1)
    n, k = 500, 8
    vectors = clustered(n, 12, rng)
    oracle = exact(vectors, k)
    broken = oracle.neighbors.copy()
    rows = rng.choice(n, size=50, replace=False)
    broken[rows, k // 2 :] = NO_NEIGHBOR  # half of each of these rows lost
    graph = KnnGraph.from_arrays(broken, np.where(broken >= 0, oracle.similarities, 0.0))
    fixed = join_rows(graph, vectors, rows, np.ones(n, dtype=np.bool_), rng)
    hits = sum(np.intersect1d(fixed.neighbors[r], oracle.neighbors[r]).size for r in rows)
    assert hits / (rows.size * k) >= 0.95


def test_absent_nodes_never_become_neighbours() -> None:
    rng = np.random.default_rng(2)
    n, k = 300, 5
    vectors = clustered(n, 8, rng)
    present = np.ones(n, dtype=np.bool_)
    present[::3] = False
    graph = exact(vectors, k)
    nb = np.where(present[graph.neighbors], graph.neighbors, NO_NEIGHBOR)
    graph = KnnGraph.from_arrays(nb, np.where(nb >= 0, graph.similarities, 0.0))
    rows = np.flatnonzero(present)
    out = join_rows(graph, vectors, rows, present, rng, random_candidates=20)
    listed = out.neighbors[out.neighbors != NO_NEIGHBOR]
    assert present[listed].all()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 30),
    k=st.integers(1, 6),
    offers=st.integers(0, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_merged_rows_hold_the_best_distinct_entries(n: int, k: int, offers: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = min(k, n - 1)  # a row cannot hold more distinct others
    vectors = unit(rng.standard_normal((n, 4)))
    sims = vectors @ vectors.T
    start = exact(vectors, k)
    # Start from a partial graph: some entries dropped to padding.
    drop = rng.random(start.neighbors.shape) < 0.4
    nb = np.where(drop, NO_NEIGHBOR, start.neighbors)
    graph = KnnGraph.from_arrays(nb, np.where(nb >= 0, start.similarities, 0.0))
    neighbors, similarities = graph.neighbors.copy(), graph.similarities.copy()
    order = np.argsort(np.where(nb >= 0, -similarities, np.inf), axis=1, kind="stable")
    neighbors = np.take_along_axis(neighbors, order, axis=1)
    similarities = np.take_along_axis(similarities, order, axis=1)
    before = [set(r[r >= 0].tolist()) for r in neighbors]
    dst = rng.integers(0, n, offers).astype(np.int64)
    src = rng.integers(0, n, offers).astype(np.int64)
    merge_edges(neighbors, similarities, dst, src, sims[dst, src].astype(np.float32))
    merged = KnnGraph(neighbors, similarities)
    check_rows(merged)
    for i in range(n):
        pool = before[i] | {int(s) for d, s in zip(dst, src, strict=True) if d == i and s != i}
        want = sorted(pool, key=lambda j: -sims[i, j])[:k]
        got = merged.neighbors[i][merged.neighbors[i] >= 0]
        np.testing.assert_allclose(
            np.sort(sims[i, got]), np.sort(sims[i, want]), atol=1e-6, err_msg=f"row {i}"
        )


# -- the compiled kernels (numba) against the numpy fallback ----------------------------------

HAS_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = needs_numba_mark()


def run_with(mode: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """fn(*args, **kwargs) with GRACE_NUMBA=mode; restores the environment after."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(acceleration.ENV_VAR, mode)
        return fn(*args, **kwargs)


def assert_same_graph(a: KnnGraph, b: KnnGraph) -> None:
    """The same rows; similarities equal up to float32 rounding (the kernels sum a dot product
    in another order than BLAS)."""
    np.testing.assert_array_equal(a.neighbors, b.neighbors)
    np.testing.assert_allclose(a.similarities, b.similarities, atol=1e-5)


def drifted_round(
    seed: int, n: int, dim: int, k: int
) -> tuple[KnnGraph, F32, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """An exact graph of `vectors` before 30% of them moved: (graph, vectors now, moved mask,
    rows to join)."""
    rng = np.random.default_rng(seed)
    vectors = clustered(n, dim, rng)
    graph = exact(vectors, k)
    moved_ids = rng.choice(n, size=n * 3 // 10, replace=False)
    vectors[moved_ids] = unit(vectors[moved_ids] + 0.1 * rng.standard_normal((moved_ids.size, dim)))
    moved = np.zeros(n, dtype=np.bool_)
    moved[moved_ids] = True
    return graph, vectors, moved, find_relink_rows(graph, moved_ids)


@needs_numba
@pytest.mark.parametrize(
    ("seed", "dtype"), [(0, np.float32), (1, np.float32), (2, np.float32), (0, np.float16)]
)
def test_join_numba_and_numpy_build_the_same_graph(seed: int, dtype: type[np.floating]) -> None:
    graph, full, moved, rows = drifted_round(seed, 600, 16, 8)
    vectors = full.astype(dtype)  # float16: the kernels read its bits (acceleration)
    if dtype == np.float16:  # the unmoved rows' cosines from these vectors too, as a keeper's
        graph = run_with("0", rescore_edges, graph, vectors, np.ones(graph.n, dtype=np.bool_))
    present = np.ones(graph.n, dtype=np.bool_)
    present[::7] = False  # absent nodes: never picked, never listed
    keep = present[graph.neighbors]
    order = np.argsort(~keep, axis=1, kind="stable")  # padding last
    graph = KnnGraph.from_arrays(
        np.take_along_axis(np.where(keep, graph.neighbors, NO_NEIGHBOR), order, axis=1),
        np.take_along_axis(np.where(keep, graph.similarities, 0.0), order, axis=1),
    )
    out = {}
    for mode in ("1", "0"):
        rescored = run_with(mode, rescore_edges, graph, vectors, moved)
        assert_same_graph(rescored, run_with("0", rescore_edges, graph, vectors, moved))
        for expand in (None, 3):
            for current in (False, True):  # own entries scored again, or taken as stored
                rng = np.random.default_rng(seed)
                out[mode, expand, current] = run_with(
                    mode,
                    join_rows,
                    rescored,
                    vectors,
                    rows,
                    present,
                    rng,
                    expand=expand,
                    current=current,
                )
                check_rows(out[mode, expand, current])
    for expand in (None, 3):
        for current in (False, True):
            assert_same_graph(out["1", expand, current], out["0", expand, current])
        # Rescored similarities are the current cosines: taking them changes no row.
        assert_same_graph(out["0", expand, True], out["0", expand, False])


@needs_numba
def test_join_on_threads_builds_the_graph_of_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    graph, vectors, moved, rows = drifted_round(3, 900, 12, 6)
    present = np.ones(graph.n, dtype=np.bool_)
    graphs = []
    for threads, min_rows in ((1, 10**9), (3, 1)):
        monkeypatch.setattr(descent, "_THREADS", threads)
        monkeypatch.setattr(descent, "_THREAD_MIN_ROWS", min_rows)
        rescored = run_with("1", rescore_edges, graph, vectors, moved)
        rng = np.random.default_rng(0)
        graphs.append(run_with("1", join_rows, rescored, vectors, rows, present, rng))
    np.testing.assert_array_equal(graphs[0].neighbors, graphs[1].neighbors)
    np.testing.assert_array_equal(graphs[0].similarities, graphs[1].similarities)


@needs_numba
def test_join_offers_reverse_edges_in_slices_with_the_same_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled join offers reverse edges a slice of rows at a time (to bound the offer
    arrays): any slice size gives the graph of one slice."""
    graph, vectors, moved, rows = drifted_round(4, 900, 12, 6)
    present = np.ones(graph.n, dtype=np.bool_)
    graphs = []
    for offer_rows in (10**9, 7, 64):
        monkeypatch.setattr(descent, "_OFFER_ROWS", offer_rows)
        rescored = run_with("1", rescore_edges, graph, vectors, moved)
        rng = np.random.default_rng(0)
        graphs.append(run_with("1", join_rows, rescored, vectors, rows, present, rng))
    for other in graphs[1:]:
        np.testing.assert_array_equal(graphs[0].neighbors, other.neighbors)
        np.testing.assert_array_equal(graphs[0].similarities, other.similarities)


@needs_numba
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 30),
    k=st.integers(1, 6),
    offers=st.integers(0, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_merge_numba_and_numpy_keep_the_same_rows(n: int, k: int, offers: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = min(k, n - 1)
    vectors = unit(rng.standard_normal((n, 4)))
    sims = (vectors @ vectors.T).astype(np.float32)
    start = exact(vectors, k)
    nb = np.where(rng.random(start.neighbors.shape) < 0.4, NO_NEIGHBOR, start.neighbors)
    order = np.argsort(np.where(nb >= 0, -start.similarities, np.inf), axis=1, kind="stable")
    nb = np.take_along_axis(nb, order, axis=1).astype(np.int32)
    sim = np.where(nb >= 0, np.take_along_axis(start.similarities, order, axis=1), 0.0)
    dst = rng.integers(-1, n, offers).astype(np.int64)
    src = rng.integers(-1, n, offers).astype(np.int64)
    offered = np.where((dst >= 0) & (src >= 0), sims[dst, src], 0.0).astype(np.float32)
    rows = {}
    for mode in ("1", "0"):
        neighbors, similarities = nb.copy(), sim.astype(np.float32)
        run_with(mode, merge_edges, neighbors, similarities, dst, src, offered)
        rows[mode] = KnnGraph(neighbors, similarities)
    assert_same_graph(rows["1"], rows["0"])


def test_unit_drift_is_the_repair_measure_for_unit_rows() -> None:
    rng = np.random.default_rng(4)
    old = unit(rng.standard_normal((300, 24)))
    new = unit(old + 0.3 * rng.standard_normal((300, 24)) * (rng.random((300, 1)) < 0.5))
    old[:3], new[1:4] = 0.0, 0.0  # zero rows: 0 and 0 -> 0, one zero -> 1
    got = measure_unit_drift(old, new)
    np.testing.assert_allclose(got, measure_drift(old, new), atol=1e-6)
    assert (got[(old == new).all(axis=1)] == 0.0).all(), "an unchanged row never drifts"
    for dtype in (np.float16, np.float32):
        assert measure_unit_drift(old.astype(dtype), new).dtype == np.float32
    with pytest.raises(ValueError, match="finite"):
        measure_unit_drift(old, np.full_like(new, np.nan))


@pytest.mark.parametrize("mode", ["0", pytest.param("1", marks=needs_numba)])
def test_in_place_steps_give_the_graph_of_the_copying_ones(mode: str) -> None:
    """in_place rewrites the given lists (the graph keeper owns its lists: a copy per step
    held two more at once) and gives the graph a copying step gives."""
    graph, vectors, moved, rows = drifted_round(5, 600, 16, 8)
    present = np.ones(graph.n, dtype=np.bool_)
    copied = run_with(mode, rescore_edges, graph, vectors, moved)
    copied = run_with(
        mode, join_rows, copied, vectors, rows, present, np.random.default_rng(1), iterations=2
    )
    own = KnnGraph(graph.neighbors.copy(), graph.similarities.copy())
    nb, sim = own.neighbors, own.similarities
    rescored = run_with(mode, rescore_edges, own, vectors, moved, in_place=True)
    joined = run_with(
        mode,
        join_rows,
        rescored,
        vectors,
        rows,
        present,
        np.random.default_rng(1),
        iterations=2,
        in_place=True,
    )
    assert joined.neighbors is nb or np.shares_memory(joined.neighbors, nb)
    assert np.shares_memory(joined.similarities, sim)
    np.testing.assert_array_equal(joined.neighbors, copied.neighbors)
    np.testing.assert_array_equal(joined.similarities, copied.similarities)
    assert not np.array_equal(graph.neighbors, copied.neighbors)  # the input was copied


@needs_numba
def test_join_in_walk_order_builds_the_graph_of_id_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ranks` only orders the compiled pass (for the cache): a walk of the graph, or any
    other order, on threads and over two passes, gives the graph of id order and of numpy."""
    graph, vectors, moved, rows = drifted_round(6, 900, 12, 6)
    present = np.ones(graph.n, dtype=np.bool_)
    present[::11] = False
    monkeypatch.setattr(descent, "_THREADS", 3)
    monkeypatch.setattr(descent, "_THREAD_MIN_ROWS", 1)
    rescored = run_with("1", rescore_edges, graph, vectors, moved)
    walk = run_with("1", descent.walk_ranks, rescored)
    assert walk is not None
    shuffled = np.random.default_rng(2).permutation(graph.n).astype(np.int64)
    graphs = {}
    for name, mode, ranks in (
        ("id", "1", None),
        ("walk", "1", walk),
        ("shuffled", "1", shuffled),
        ("numpy", "0", walk),
    ):
        rng = np.random.default_rng(0)
        graphs[name] = run_with(
            mode, join_rows, rescored, vectors, rows, present, rng, iterations=2, ranks=ranks
        )
    for name in ("walk", "shuffled"):
        np.testing.assert_array_equal(graphs[name].neighbors, graphs["id"].neighbors)
        np.testing.assert_array_equal(graphs[name].similarities, graphs["id"].similarities)
    assert_same_graph(graphs["numpy"], graphs["id"])


@needs_numba
def test_walk_ranks_place_every_node_once_near_its_neighbours() -> None:
    rng = np.random.default_rng(7)
    vectors = clustered(1200, 16, rng)
    graph = exact(vectors, 8)
    nb = graph.neighbors.copy()
    nb[100:110] = NO_NEIGHBOR  # rows without edges still get a place
    nb[200, 3:] = NO_NEIGHBOR
    sparse = KnnGraph(nb, graph.similarities)
    ranks = run_with("1", descent.walk_ranks, sparse)
    assert ranks is not None
    np.testing.assert_array_equal(np.sort(ranks), np.arange(graph.n))
    # A node and its nearest neighbour sit close in the walk (random places: ~n / 3 apart).
    listed = nb[:, 0] >= 0
    gaps = np.abs(ranks[listed] - ranks[nb[listed, 0]])
    assert np.median(gaps) <= 0.01 * graph.n
    assert run_with("0", descent.walk_ranks, sparse) is None  # the numpy pass takes id order

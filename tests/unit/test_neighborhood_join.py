"""core.neighborhood_join: one pass of NN-descent's local join gives each row the best of its
own entries and every offer its neighbourhoods make (checked against a plain-Python reading of
the definition), whatever the order, threads or batching; the compiled and numpy paths agree."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

import grace_selection.core.neighborhood_join as nj
from grace_selection.core import acceleration
from grace_selection.core.descent import rescore_edges, walk_ranks
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.neighborhood_join import neighborhood_join
from tests.unit.test_descent import (
    assert_same_graph,
    check_rows,
    drifted_round,
    exact,
    needs_numba,
    recall,
    run_with,
)

F32 = npt.NDArray[np.float32]
MODES = pytest.mark.parametrize(
    "mode", [pytest.param("1", marks=needs_numba), pytest.param("0", id="numpy")]
)


def rescored(seed: int, n: int, dim: int, k: int) -> tuple[KnnGraph, F32, npt.NDArray[np.bool_]]:
    """A graph exact before 30% of the nodes moved, its similarities re-scored (current)."""
    graph, vectors, moved, _ = drifted_round(seed, n, dim, k)
    return run_with("0", rescore_edges, graph, vectors, moved), vectors, moved


def definition(
    graph: KnnGraph,
    vectors: F32,
    listed: int,
    reverse: int,
    focus: npt.NDArray[np.bool_] | None,
) -> tuple[npt.NDArray[np.int32], F32]:
    """The pass read straight from its definition, in plain Python."""
    nb, sim = graph.neighbors, graph.similarities
    n, width = nb.shape
    nearer_first: list[list[int]] = [[] for _ in range(n)]
    for t in range(width):
        for u in range(n):
            v = int(nb[u, t])
            if v >= 0 and len(nearer_first[v]) < reverse:
                nearer_first[v].append(u)
    heard: list[dict[int, float]] = [{} for _ in range(n)]

    def hot(x: int) -> bool:
        return focus is None or bool(focus[x])

    def offer(dst: int, src: int, s: float) -> None:
        heard[dst].setdefault(src, s)

    for v in range(n):
        forward = [int(x) for x in nb[v, :listed] if x >= 0]
        backward = [u for u in nearer_first[v] if u not in forward]
        for t, x in enumerate(forward):
            if hot(v) or hot(x):
                offer(x, v, float(sim[v, t]))
        for u in backward:
            if hot(v) or hot(u):
                offer(v, u, float(vectors[v] @ vectors[u]))
        members = forward + backward
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if hot(a) or hot(b):
                    s = float(vectors[a] @ vectors[b])
                    offer(a, b, s)
                    offer(b, a, s)
    out_nb = np.full((n, width), NO_NEIGHBOR, dtype=np.int32)
    out_sim = np.zeros((n, width), dtype=np.float32)
    for v in range(n):
        entries = {int(x): float(s) for x, s in zip(nb[v], sim[v], strict=True) if x >= 0}
        for src, s in heard[v].items():
            entries.setdefault(src, s)
        best = sorted(entries.items(), key=lambda e: (-e[1], e[0]))[:width]
        for t, (x, s) in enumerate(best):
            out_nb[v, t], out_sim[v, t] = x, s
    return out_nb, out_sim


@MODES
@pytest.mark.parametrize(("listed", "reverse", "focused"), [(None, 3, False), (4, 5, True)])
def test_each_row_keeps_the_best_of_its_entries_and_every_offer(
    mode: str, listed: int | None, reverse: int, focused: bool
) -> None:
    graph, vectors, moved = rescored(0, 160, 12, 6)
    focus = moved if focused else None
    out = run_with(
        mode, neighborhood_join, graph, vectors, listed=listed, reverse=reverse, focus=focus
    )
    check_rows(out)
    want_nb, want_sim = definition(
        graph, vectors, graph.k if listed is None else listed, reverse, focus
    )
    np.testing.assert_array_equal(out.neighbors, want_nb)
    np.testing.assert_allclose(out.similarities, want_sim, atol=1e-5)


@MODES
def test_the_pass_never_loses_a_better_entry_and_lifts_recall(mode: str) -> None:
    graph, vectors, _ = rescored(1, 900, 16, 8)
    out = run_with(mode, neighborhood_join, graph, vectors, reverse=6)
    check_rows(out)
    real = graph.neighbors != NO_NEIGHBOR
    # The k best of a superset: every place holds at least what it held.
    assert (out.similarities[real] >= graph.similarities[real] - 1e-6).all()
    oracle = exact(vectors, 8)
    assert recall(out, oracle) > recall(graph, oracle) + 0.15
    np.testing.assert_array_equal(
        graph.neighbors, rescored(1, 900, 16, 8)[0].neighbors
    )  # input kept


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("seed", [2, 3])
def test_numba_and_numpy_build_the_same_graph(seed: int, dtype: type[np.floating]) -> None:
    graph, full, moved = rescored(seed, 700, 16, 8)
    vectors = full.astype(dtype)  # float16: the kernels read its bits (acceleration)
    # Every stored cosine from these vectors, as a keeper that stores float16 has them.
    graph = run_with("0", rescore_edges, graph, vectors, np.ones(graph.n, dtype=np.bool_))
    for focus in (None, moved):
        compiled = run_with(
            "1", neighborhood_join, graph, vectors, listed=6, reverse=5, focus=focus
        )
        numpy = run_with("0", neighborhood_join, graph, vectors, listed=6, reverse=5, focus=focus)
        assert_same_graph(compiled, numpy)


@needs_numba
def test_walk_order_threads_and_small_batches_build_the_graph_of_one_pass_in_id_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph, vectors, _ = rescored(4, 900, 12, 6)
    ranks = run_with("1", walk_ranks, graph)
    plain = run_with("1", neighborhood_join, graph, vectors, reverse=4)
    monkeypatch.setattr(nj, "_THREADS", 3)
    monkeypatch.setattr(nj, "_THREAD_MIN_NODES", 1)
    monkeypatch.setattr(nj, "_OFFER_BUFFER", 64)  # a merge every few nodes
    split = run_with("1", neighborhood_join, graph, vectors, reverse=4, ranks=ranks)
    # The same lists; a similarity may come from either end of a pair (last-bit rounding).
    assert_same_graph(plain, split)


@MODES
def test_focus_compares_only_pairs_with_a_focused_end(mode: str) -> None:
    graph, vectors, _ = rescored(5, 300, 12, 6)
    nobody = np.zeros(graph.n, dtype=np.bool_)
    same = run_with(mode, neighborhood_join, graph, vectors, focus=nobody)
    np.testing.assert_array_equal(same.neighbors, graph.neighbors)
    everybody = run_with(mode, neighborhood_join, graph, vectors, focus=~nobody)
    assert_same_graph(everybody, run_with(mode, neighborhood_join, graph, vectors))


@needs_numba
def test_reverse_lists_name_the_nearest_listers_first() -> None:
    graph, _, _ = rescored(6, 400, 8, 5)
    compiled = run_with(
        "1", lambda: acceleration.neighborhood_join_kernels().reverse_lists(graph.neighbors, 4)
    )
    np.testing.assert_array_equal(compiled, nj._reverse_lists_numpy(graph.neighbors, 4))
    for v in range(graph.n):
        listers = [
            (t, u) for u in range(graph.n) for t in range(graph.k) if graph.neighbors[u, t] == v
        ]
        want = [u for _, u in sorted(listers)[:4]]
        assert compiled[v, : len(want)].tolist() == want
        assert (compiled[v, len(want) :] == NO_NEIGHBOR).all()


@MODES
def test_half_float_vectors_build_nearly_the_same_graph(mode: str) -> None:
    graph, vectors, _ = rescored(7, 500, 16, 8)
    full = run_with(mode, neighborhood_join, graph, vectors, reverse=5)
    half = run_with(mode, neighborhood_join, graph, vectors.astype(np.float16), reverse=5)
    check_rows(half)
    oracle = exact(vectors, 8)
    assert abs(recall(half, oracle) - recall(full, oracle)) < 0.01


def test_bad_arguments_name_the_argument() -> None:
    graph, vectors, _ = rescored(8, 100, 8, 4)
    with pytest.raises(ValueError, match="reverse"):
        neighborhood_join(graph, vectors, reverse=-1)
    with pytest.raises(ValueError, match="focus"):
        neighborhood_join(graph, vectors, focus=np.zeros(3, dtype=np.bool_))

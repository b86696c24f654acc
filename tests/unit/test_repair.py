"""Graph repair: drift detection, the rows to re-query, and splicing rows back in."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.repair import (
    find_relink_rows,
    insert_reverse_edges,
    measure_drift,
    plan_repair,
    realign,
    remove_shared_drift,
    replace_rows,
)


def exact_knn(x: npt.NDArray[np.float64], k: int) -> KnnGraph:
    """The exact cosine k-NN graph, self excluded: the oracle."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    nb = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return KnnGraph.from_arrays(nb, np.take_along_axis(sim, nb, axis=1))


def edge_sets(graph: KnnGraph) -> list[set[int]]:
    return [{int(j) for j in row if j != NO_NEIGHBOR} for row in graph.neighbors]


def test_drift_of_known_pairs() -> None:
    old = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    new = np.array([[3.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(measure_drift(old, new), [0.0, 2.0, 1.0, 1.0, 0.0, 1.0])


@given(seed=st.integers(0, 2**31), m=st.integers(1, 30), d=st.integers(1, 8))
@settings(max_examples=40, deadline=None)
def test_drift_is_one_minus_cosine_and_in_range(seed: int, m: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    old, new = rng.normal(size=(m, d)), rng.normal(size=(m, d))
    drift = measure_drift(old, new)
    naive = [
        1 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
        for a, b in zip(old, new, strict=True)
    ]
    np.testing.assert_allclose(drift, naive, atol=1e-6)
    assert drift.dtype == np.float32
    assert np.all((drift >= 0) & (drift <= 2))


@given(
    seed=st.integers(0, 2**31),
    n=st.integers(3, 40),
    moved_share=st.floats(0.0, 1.0),
    threshold=st.floats(0.0, 2.0),
)
@settings(max_examples=60, deadline=None)
def test_plan_repair_matches_a_naive_oracle(
    seed: int, n: int, moved_share: float, threshold: float
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    graph = exact_knn(x, min(3, n - 1))
    ids = rng.choice(n, size=round(moved_share * n), replace=False)
    new = x[ids] + rng.normal(scale=rng.uniform(0, 2), size=(ids.size, 4))
    plan = plan_repair(graph, ids, x[ids], new, threshold)

    distances = measure_drift(x[ids], new)
    expected_drifted = {int(i) for i, dist in zip(ids, distances, strict=True) if dist > threshold}
    expected_relink = expected_drifted | {
        i for i, row in enumerate(edge_sets(graph)) if row & expected_drifted
    }
    assert set(plan.drifted.tolist()) == expected_drifted
    assert set(plan.relink.tolist()) == expected_relink
    for arr in (plan.drifted, plan.relink):
        assert arr.dtype == np.int64
        assert np.all(np.diff(arr) > 0)
    np.testing.assert_array_equal(plan.distances, distances)


def test_the_threshold_extremes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    graph = exact_knn(x, 3)
    ids = np.arange(5)
    moved = x[ids] + 0.5
    assert plan_repair(graph, ids, x[ids], moved, 2.0).drifted.size == 0
    np.testing.assert_array_equal(plan_repair(graph, ids, x[ids], moved, 0.0).drifted, ids)
    # Unmoved nodes never drift, whatever the threshold.
    assert plan_repair(graph, ids, x[ids], x[ids], 0.0).drifted.size == 0


def test_relink_rows_skip_padding() -> None:
    graph = KnnGraph.from_arrays(
        [[1, NO_NEIGHBOR], [NO_NEIGHBOR, NO_NEIGHBOR], [0, 1]], np.ones((3, 2))
    )
    np.testing.assert_array_equal(find_relink_rows(graph, [0]), [0, 2])
    np.testing.assert_array_equal(find_relink_rows(graph, np.array([], dtype=np.int64)), [])


def test_repairing_the_relink_rows_restores_them_exactly() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 6))
    k = 5
    graph = exact_knn(x, k)
    ids = rng.choice(200, size=60, replace=False)
    x_new = x.copy()
    x_new[ids] += rng.normal(scale=0.8, size=(60, 6))
    plan = plan_repair(graph, ids, x[ids], x_new[ids], 0.05)
    truth = exact_knn(x_new, k)
    repaired = replace_rows(
        graph, plan.relink, truth.neighbors[plan.relink], truth.similarities[plan.relink]
    )
    np.testing.assert_array_equal(repaired.neighbors[plan.relink], truth.neighbors[plan.relink])
    # No row anywhere still points at a drifted node with a stale similarity.
    untouched = np.setdiff1d(np.arange(200), plan.relink)
    assert not np.isin(repaired.neighbors[untouched], plan.drifted).any()
    # Reverse insertion can only bring rows closer to the exact graph.
    improved = insert_reverse_edges(repaired, plan.drifted)

    def recall(g: KnnGraph) -> float:
        hits = sum(len(a & b) for a, b in zip(edge_sets(g), edge_sets(truth), strict=True))
        return hits / (200 * k)

    assert recall(improved) >= recall(repaired)
    assert recall(repaired) > recall(graph)


def test_replace_rows_leaves_the_input_and_other_rows_alone() -> None:
    rng = np.random.default_rng(1)
    graph = exact_knn(rng.normal(size=(10, 3)), 3)
    before = graph.neighbors.copy()
    out = replace_rows(
        graph, [2, 5], [[0, 1, NO_NEIGHBOR], [9, 8, 7]], [[0.9, 0.5, 0.3], [1.0, 1.0, 1.0]]
    )
    np.testing.assert_array_equal(graph.neighbors, before)
    np.testing.assert_array_equal(out.neighbors[2], [0, 1, NO_NEIGHBOR])
    assert out.similarities[2, 2] == 0.0  # padding carries no similarity
    others = np.setdiff1d(np.arange(10), [2, 5])
    np.testing.assert_array_equal(out.neighbors[others], before[others])


@given(seed=st.integers(0, 2**31), share=st.floats(0.0, 1.0))
@settings(max_examples=40, deadline=None)
def test_reverse_insertion_keeps_rows_valid_and_only_improves_them(seed: int, share: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3))
    graph = exact_knn(x, 4)
    rows = rng.choice(40, size=round(share * 40), replace=False)
    out = insert_reverse_edges(graph, rows)
    for i in range(40):
        real = out.neighbors[i][out.neighbors[i] != NO_NEIGHBOR]
        assert i not in real
        assert len(set(real.tolist())) == real.size
        changed = out.neighbors[i] != graph.neighbors[i]
        assert changed.sum() <= 1
        if changed.any():
            slot = int(np.flatnonzero(changed)[0])
            assert int(out.neighbors[i, slot]) in rows
            assert out.similarities[i, slot] > graph.similarities[i, slot]
            assert i in graph.neighbors[out.neighbors[i, slot]]


def test_reverse_insertion_fills_padding_first() -> None:
    graph = KnnGraph.from_arrays(
        [[1, 2], [0, NO_NEIGHBOR], [0, 1]], [[0.9, 0.2], [0.9, 0.0], [0.2, 0.5]]
    )
    out = insert_reverse_edges(graph, [2])
    np.testing.assert_array_equal(out.neighbors[1], [0, 2])
    assert out.similarities[1, 1] == pytest.approx(0.5)
    np.testing.assert_array_equal(out.neighbors[0], [1, 2])  # 0 already lists 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"threshold": 2.5}, "threshold"),
        ({"ids": [0, 0]}, "ids"),
        ({"ids": [0, 99]}, "ids"),
        ({"ids": [0.5, 1.0]}, "ids"),
        ({"old_embeddings": np.ones(2)}, "old_embeddings"),
        ({"new_embeddings": np.ones((2, 4))}, "new_embeddings"),
        ({"new_embeddings": np.array([[np.nan, 1, 1], [1, 1, 1]])}, "new_embeddings"),
        ({"ids": [0, 1, 2]}, "old_embeddings"),
    ],
)
def test_bad_inputs_name_the_field(kwargs: dict[str, object], field: str) -> None:
    graph = exact_knn(np.random.default_rng(0).normal(size=(10, 3)), 3)
    args: dict[str, object] = {
        "ids": [0, 1],
        "old_embeddings": np.ones((2, 3)),
        "new_embeddings": np.ones((2, 3)),
        "threshold": 0.1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}:"):
        plan_repair(graph, **args)  # type: ignore[arg-type]


def test_replace_rows_refuses_a_self_match_and_bad_shapes() -> None:
    graph = exact_knn(np.random.default_rng(0).normal(size=(6, 2)), 2)
    with pytest.raises(ValueError, match=r"^neighbors:"):
        replace_rows(graph, [1], [[1, 2]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match=r"^neighbors:"):
        replace_rows(graph, [1], [[0, 2, 3]], [[1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"^similarities:"):
        replace_rows(graph, [1], [[0, 2]], [[1.0]])


def _flat_states(seed: int, n: int = 200, dim: int = 16) -> npt.NDArray[np.float64]:
    """Unit vectors like a small LM's pooled states: one shared direction, tiny spread."""
    rng = np.random.default_rng(seed)
    common = np.zeros(dim)
    common[0] = 1.0
    rows = common + 0.01 * rng.normal(size=(n, dim))
    unit: npt.NDArray[np.float64] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit


def test_remove_shared_drift_takes_back_the_move_every_row_made() -> None:
    old = _flat_states(0)
    shift = np.zeros(old.shape[1])
    shift[1] = 0.05  # larger than the spread between rows: the fresh rows' nearest are fresh
    new = old + shift + 0.001 * np.random.default_rng(1).normal(size=old.shape)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    aligned = remove_shared_drift(old, new, new)
    assert aligned.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(aligned, axis=1), 1.0, atol=1e-6)
    before = float(np.median(measure_drift(old, new)))
    after = float(np.median(measure_drift(old, aligned)))
    assert after < before / 50  # what is left is each row's own small move


def test_remove_shared_drift_moves_new_rows_the_same_way() -> None:
    old = _flat_states(2)
    shift = np.zeros(old.shape[1])
    shift[2] = 0.05
    new = old + shift
    newcomer = _flat_states(3, n=5) + shift
    aligned = remove_shared_drift(old, new, np.vstack([new, newcomer]))
    # A newcomer from the same model lands in the old frame, among the old rows.
    expected = _flat_states(3, n=5)
    assert float(measure_drift(expected, aligned[-5:]).max()) < 1e-6


def test_remove_shared_drift_leaves_too_few_rows_or_no_move_alone() -> None:
    old = _flat_states(4, n=7)
    shifted = old + 0.05
    out = remove_shared_drift(old, shifted, shifted)
    np.testing.assert_array_equal(out, shifted.astype(np.float32))  # 7 < min_rows
    same = _flat_states(5).astype(np.float32)
    np.testing.assert_array_equal(remove_shared_drift(same, same, same), same)


def test_realign_in_place_gives_the_same_rows_without_a_copy() -> None:
    old = _flat_states(6).astype(np.float32)
    shift = np.zeros(old.shape[1], dtype=np.float32)
    shift[1] = 0.05
    new = old + shift
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    rows = np.arange(old.shape[0], dtype=np.int64)
    untouched = new.copy()
    copied = realign(old, rows, new, rows, new)
    np.testing.assert_array_equal(new, untouched)  # by default the input is left alone
    assert not np.allclose(copied, untouched)  # the shared move was taken out
    owned = new.copy()
    aligned = realign(old, rows, owned, rows, owned, overwrite=True)
    assert aligned is owned
    np.testing.assert_array_equal(aligned, copied)

"""HNSW against the exact oracle, and the NeighborIndex contract for both adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.adapters.hnsw_index import HnswNeighborIndex
from grace_selection.adapters.ports import NeighborIndex


def clustered(n: int, dim: int, clusters: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, size=n)
    return (centers[labels] + 0.35 * rng.normal(size=(n, dim))).astype(np.float32)


def make(kind: str, dim: int) -> NeighborIndex:
    return HnswNeighborIndex(dim) if kind == "hnsw" else BruteForceIndex(dim)


def test_hnsw_recall_at_10_against_brute_force() -> None:
    data = clustered(20_000, 48, 40, seed=0)
    ids = np.arange(data.shape[0], dtype=np.int64)
    hnsw, exact = HnswNeighborIndex(48), BruteForceIndex(48)
    hnsw.upsert(ids, data)
    exact.upsert(ids, data)
    approx_graph, exact_graph = hnsw.knn_graph(10), exact.knn_graph(10)
    hits = sum(
        len(set(a) & set(e))
        for a, e in zip(approx_graph.neighbors, exact_graph.neighbors, strict=True)
    )
    recall = hits / exact_graph.neighbors.size
    assert recall >= 0.95, f"recall@10 {recall:.3f}"


@pytest.mark.parametrize("kind", ["hnsw", "brute"])
def test_graph_has_no_self_loops_and_sorted_similarities(kind: str) -> None:
    data = clustered(500, 16, 5, seed=1)
    index = make(kind, 16)
    index.upsert(np.arange(500, dtype=np.int64), data)
    graph = index.knn_graph(8)
    assert graph.neighbors.shape == (500, 8)
    assert not (graph.neighbors == np.arange(500)[:, None]).any()
    assert (np.diff(graph.similarities, axis=1) <= 1e-5).all()
    # Similarities are the cosines of the stored vectors.
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    expected = np.einsum("ij,ikj->ik", unit, unit[graph.neighbors])
    np.testing.assert_allclose(graph.similarities, expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "brute"])
def test_upsert_replaces_a_vector(kind: str) -> None:
    index = make(kind, 4)
    index.upsert(np.array([0, 1, 2], dtype=np.int64), np.eye(4, dtype=np.float32)[:3])
    index.upsert(np.array([0], dtype=np.int64), np.array([[0, 0, 1.0, 0.01]], dtype=np.float32))
    ids, sims = index.query(np.array([[0, 0, 1, 0]], dtype=np.float32), 2)
    assert set(ids[0].tolist()) == {0, 2}
    assert sims[0, 0] > 0.99
    assert len(index) == 3


@pytest.mark.parametrize("kind", ["hnsw", "brute"])
def test_query_pads_when_fewer_points_than_k(kind: str) -> None:
    index = make(kind, 3)
    index.upsert(np.array([5, 7], dtype=np.int64), np.eye(3, dtype=np.float32)[:2])
    ids, sims = index.query(np.eye(3, dtype=np.float32)[:1], 4)
    assert ids[0, 0] == 5
    assert (ids[0, 2:] == -1).all()
    assert np.isneginf(sims[0, 2:]).all()
    graph = index.knn_graph(3)
    assert graph.n == 8  # ids 0..7, absent rows padded
    assert (graph.neighbors[0] == -1).all()
    assert graph.neighbors[5, 0] == 7


@pytest.mark.parametrize("kind", ["hnsw", "brute"])
def test_snapshot_round_trip(kind: str, tmp_path: Path) -> None:
    data = clustered(2_000, 12, 8, seed=2)
    index = make(kind, 12)
    index.upsert(np.arange(2_000, dtype=np.int64), data)
    before = index.knn_graph(5)
    target = tmp_path / "index"
    index.save(target)
    index.save(target)  # overwriting an existing snapshot swaps it whole
    loaded = HnswNeighborIndex.load(target) if kind == "hnsw" else BruteForceIndex.load(target)
    after = loaded.knn_graph(5)
    assert len(loaded) == 2_000
    np.testing.assert_array_equal(before.neighbors, after.neighbors)
    loaded.upsert(np.array([2_000], dtype=np.int64), data[:1])  # still writable
    assert len(loaded) == 2_001


@pytest.mark.parametrize("kind", ["hnsw", "brute"])
def test_bad_input_is_refused(kind: str) -> None:
    index = make(kind, 4)
    with pytest.raises(ValueError, match="shape"):
        index.upsert(np.array([0, 1], dtype=np.int64), np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="unique"):
        index.upsert(np.array([1, 1], dtype=np.int64), np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        index.upsert(np.array([-1], dtype=np.int64), np.ones((1, 4), dtype=np.float32))
    assert len(index) == 0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), k=st.integers(1, 8), seed=st.integers(0, 1000))
def test_brute_force_graph_is_exact(n: int, k: int, seed: int) -> None:
    data = np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)
    index = BruteForceIndex(5)
    index.upsert(np.arange(n, dtype=np.int64), data)
    graph = index.knn_graph(k)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    best = -np.sort(-sims, axis=1)[:, : min(k, n - 1)]
    np.testing.assert_allclose(graph.similarities[:, : best.shape[1]], best, atol=1e-5)
    assert (graph.neighbors[:, best.shape[1] :] == -1).all()


def test_graph_from_answers_is_the_same_in_blocks_of_any_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Converting raw answers block by block (to bound the transients) changes no entry, for
    int32 or int64 ids, rows whose own id is missing, -1 pads and absent rows."""
    from grace_selection.adapters import knn

    rng = np.random.default_rng(3)
    n, width = 1000, 6
    others = np.stack([rng.permutation(n - 1)[:width] for _ in range(n)]).astype(np.int64)
    ids = others + (others >= np.arange(n)[:, None])  # distinct ids, none the row's own
    has_self = rng.random(n) < 0.8
    ids[has_self, rng.integers(0, width, n)[has_self]] = np.flatnonzero(has_self)
    ids[rng.random((n, width)) < 0.05] = -1
    sims = np.sort(rng.random((n, width), dtype=np.float32), axis=1)[:, ::-1].copy()
    present = rng.random(n) < 0.9

    def reference(row: int) -> tuple[list[int], list[float]]:
        own = [j for j in range(width) if ids[row, j] == row]
        drop = own[0] if own else width - 1
        kept = [j for j in range(width) if j != drop][:4]
        if not present[row]:
            return [-1] * 4, [0.0] * 4
        return (
            [int(ids[row, j]) if ids[row, j] >= 0 else -1 for j in kept],
            [float(sims[row, j]) if ids[row, j] >= 0 else 0.0 for j in kept],
        )

    whole = knn.graph_from_neighbors(ids, sims, present, 4)
    for block in (1, 7, 256):
        monkeypatch.setattr(knn, "_GRAPH_BLOCK_ROWS", block)
        for dtype in (np.int32, np.int64):
            blocked = knn.graph_from_neighbors(ids.astype(dtype), sims, present, 4)
            assert np.array_equal(blocked.neighbors, whole.neighbors)
            assert np.array_equal(blocked.similarities, whole.similarities)
    # Rows given by id (an index's stored rows, with gaps) land where the ids say.
    stored = np.flatnonzero(present)
    some_ids = np.full((n, 4), -1, dtype=np.int32)
    some_sims = np.zeros((n, 4), dtype=np.float32)
    knn.graph_rows_into(ids[stored], sims[stored], stored, some_ids, some_sims)
    assert np.array_equal(some_ids, whole.neighbors)
    assert np.array_equal(some_sims, whole.similarities)
    # A numpy integer is a first row like an int.
    for start in (100, np.int64(100)):
        block_ids = np.full((n, 4), -1, dtype=np.int32)
        block_sims = np.zeros((n, 4), dtype=np.float32)
        knn.graph_rows_into(ids[100:200], sims[100:200], start, block_ids, block_sims)
        on = present[100:200]
        assert np.array_equal(block_ids[100:200][on], whole.neighbors[100:200][on])
    for row in range(n):
        expect_ids, expect_sims = reference(row)
        assert whole.neighbors[row].tolist() == expect_ids
        assert np.allclose(whole.similarities[row], expect_sims)

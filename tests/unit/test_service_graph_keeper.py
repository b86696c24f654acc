"""GraphKeeper: first build, incremental repair of drifted samples, rebuild when most moved,
and snapshots that a restart loads (or rejects when damaged)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.adapters.ports import NeighborIndex
from grace_selection.api.app import make_index_factory
from grace_selection.core import recall as recall_module
from grace_selection.core.graph import KnnGraph
from grace_selection.core.recall import sampled_recall
from grace_selection.service import built_graph, graph_keeper
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.keeper_types import IndexFactory
from grace_selection.settings import ServiceSettings

N, DIM, K = 300, 12, 5


def brute(dim: int) -> NeighborIndex:
    return BruteForceIndex(dim)


FACTORY = IndexFactory("brute", brute, BruteForceIndex.load)


def exact_graph(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
    return exact_knn(vectors, K).neighbors


def exact_knn(vectors: npt.NDArray[np.floating], k: int) -> KnnGraph:
    index = BruteForceIndex(vectors.shape[1])
    index.upsert(np.arange(vectors.shape[0], dtype=np.int64), vectors.astype(np.float32))
    return index.knn_graph(k)


def keeper_with(
    vectors: npt.NDArray[np.float32], folder: Path, factory: IndexFactory | None = None
) -> GraphKeeper:
    keeper = GraphKeeper(N, DIM, FACTORY if factory is None else factory, folder)
    ids = np.arange(N, dtype=np.int64)
    keeper.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
    return keeper


def data(seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, DIM)).astype(np.float32)


def moved_a_third(
    vectors: npt.NDArray[np.float32], seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(the moved ids, all rows after) a third of the rows moved by noise of 0.3 per dimension."""
    rng = np.random.default_rng(seed)
    moved = np.sort(rng.choice(N, size=N // 3, replace=False)).astype(np.int64)
    new = vectors.copy()
    new[moved] += 0.3 * rng.normal(size=(moved.size, DIM)).astype(np.float32)
    return moved, new


def test_first_update_builds_the_exact_graph(tmp_path: Path) -> None:
    vectors = data(0)
    keeper = keeper_with(vectors, tmp_path)
    assert keeper.graph is not None
    np.testing.assert_array_equal(keeper.graph.neighbors, exact_graph(vectors))


def test_drifted_samples_are_relinked_and_small_moves_ignored(tmp_path: Path) -> None:
    vectors = data(1)
    keeper = keeper_with(vectors, tmp_path)
    rng = np.random.default_rng(2)
    moved = np.array([3, 50, 77], dtype=np.int64)
    nudged = np.array([4, 5], dtype=np.int64)
    new = vectors.copy()
    new[moved] = rng.normal(size=(3, DIM))  # far away: cosine distance ~1
    new[nudged] += 1e-4  # well inside tau
    ids = np.concatenate([moved, nudged])
    update = keeper.update(ids, new[ids], 2, K, 0.1, lambda: (np.arange(N), new, 2))
    assert (update.upserted, update.rebuilt) == (3, False)
    # The moved samples' own rows are exact for their new place.
    oracle = exact_graph(np.where(np.isin(np.arange(N), moved)[:, None], new, vectors))
    np.testing.assert_array_equal(update.graph.neighbors[moved], oracle[moved])
    assert keeper.seq == 2


def test_moving_most_samples_rebuilds_from_all_embeddings(tmp_path: Path) -> None:
    keeper = keeper_with(data(3), tmp_path)
    new = data(4)
    ids = np.arange(N, dtype=np.int64)
    update = keeper.update(ids, new, 3, K, 0.1, lambda: (ids, new, 3))
    assert update.rebuilt
    np.testing.assert_array_equal(update.graph.neighbors, exact_graph(new))


def test_samples_without_embeddings_have_no_edges(tmp_path: Path) -> None:
    keeper = GraphKeeper(N, DIM, FACTORY, tmp_path)
    ids = np.arange(0, N, 2, dtype=np.int64)
    vectors = data(5)[ids]
    update = keeper.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
    assert (update.graph.neighbors[1::2] == -1).all()
    assert (update.graph.neighbors[0::2] >= 0).all()
    assert set(np.unique(update.graph.neighbors[0::2]).tolist()) <= set(ids.tolist())


@pytest.mark.parametrize("keep_index", [False, True])
@pytest.mark.parametrize("kind", ["brute", "hnsw"])
def test_snapshot_round_trip_and_damage(tmp_path: Path, kind: str, keep_index: bool) -> None:
    factory = make_index_factory(kind, keep_index=keep_index)
    vectors = data(6)
    keeper = GraphKeeper(N, DIM, factory, tmp_path / "idx")
    ids = np.arange(N, dtype=np.int64)
    keeper.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
    keeper.save(round_=0)
    loaded = GraphKeeper(N, DIM, factory, tmp_path / "idx")
    assert loaded.load()
    assert loaded.seq == keeper.seq
    assert loaded.graph is not None
    assert keeper.graph is not None
    np.testing.assert_array_equal(loaded.graph.neighbors, keeper.graph.neighbors)
    # The loaded keeper answers queries like the saved one (the same index, or the same graph
    # searching itself; not a rebuild).
    moved = np.array([7], dtype=np.int64)
    far = np.random.default_rng(9).normal(size=(1, DIM)).astype(np.float32)
    new = vectors.copy()
    new[moved] = far
    a = keeper.update(moved, far, 2, K, 0.1, lambda: (ids, new, 2))
    b = loaded.update(moved, far, 2, K, 0.1, lambda: (ids, new, 2))
    np.testing.assert_array_equal(a.graph.neighbors, b.graph.neighbors)
    other = make_index_factory("brute" if kind == "hnsw" else "hnsw")
    assert not GraphKeeper(N, DIM, other, tmp_path / "idx").load()  # another index kind
    keeper.save(round_=1)
    # Only a kept index is written; a dropped one leaves no folder behind.
    assert len(list((tmp_path / "idx").glob("index-*"))) == (1 if keep_index else 0)
    for index_dir in (tmp_path / "idx").glob("index-*"):
        shutil.rmtree(index_dir)
    if keep_index:
        assert not GraphKeeper(N, DIM, factory, tmp_path / "idx").load()
    (tmp_path / "idx" / "graph" / "neighbors.npy").unlink()
    assert not GraphKeeper(N, DIM, factory, tmp_path / "idx").load()
    assert not GraphKeeper(N + 1, DIM, factory, tmp_path / "other").load()
    keeper.delete()
    keeper.save(round_=1)  # a deleted job's keeper writes nothing
    assert not (tmp_path / "idx").exists()


def test_rows_list_twice_k_and_the_graph_publishes_the_first_k(tmp_path: Path) -> None:
    vectors = data(10)
    keeper = keeper_with(vectors, tmp_path)
    keeper.save(round_=0)
    lists = np.load(tmp_path / "graph" / "neighbors.npy")
    assert lists.shape == (N, 2 * K)
    assert keeper.graph is not None
    assert keeper.graph.k == K
    np.testing.assert_array_equal(keeper.graph.neighbors, lists[:, :K])
    index = BruteForceIndex(DIM)
    index.upsert(np.arange(N, dtype=np.int64), vectors)
    np.testing.assert_array_equal(lists, index.knn_graph(2 * K).neighbors)


def test_a_snapshot_of_k_wide_lists_loads_and_is_rebuilt_once(tmp_path: Path) -> None:
    """Snapshots made before the lists were 2k wide hold k columns and no "k" in their meta:
    they still serve the dashboard, and the next update rebuilds them."""
    vectors = data(11)
    keeper = keeper_with(vectors, tmp_path)
    keeper.save(round_=0)
    folder = tmp_path / "graph"
    for name in ("neighbors.npy", "similarities.npy"):
        np.save(folder / name, np.load(folder / name)[:, :K])
    meta = json.loads((folder / "meta.json").read_text())
    del meta["k"]
    (folder / "meta.json").write_text(json.dumps(meta))
    loaded = GraphKeeper(N, DIM, FACTORY, tmp_path)
    assert loaded.load()
    assert loaded.graph is not None
    np.testing.assert_array_equal(loaded.graph.neighbors, exact_graph(vectors))
    ids = np.arange(N, dtype=np.int64)
    moved = np.array([5], dtype=np.int64)
    update = loaded.update(moved, vectors[moved], 2, K, 0.1, lambda: (ids, vectors, 2))
    assert update.rebuilt
    np.testing.assert_array_equal(update.graph.neighbors, exact_graph(vectors))


def test_a_snapshot_with_an_index_loads_without_it_and_the_next_save_drops_it(
    tmp_path: Path,
) -> None:
    """Snapshots made while the index was kept name its folder: a keeper that drops the index
    loads the graph alone, refreshes by searching the graph, and removes the old folder."""
    vectors = data(12)
    kept = dataclasses.replace(FACTORY, keep_index=True, build_parts=1)
    ids = np.arange(N, dtype=np.int64)
    old = GraphKeeper(N, DIM, kept, tmp_path)
    old.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
    old.save(round_=0)
    assert len(list(tmp_path.glob("index-*"))) == 1
    loaded = GraphKeeper(N, DIM, FACTORY, tmp_path)
    assert loaded.load()
    assert loaded.graph is not None
    assert old.graph is not None
    np.testing.assert_array_equal(loaded.graph.neighbors, old.graph.neighbors)
    moved = np.array([3, 9], dtype=np.int64)
    new = vectors.copy()
    new[moved] = np.random.default_rng(13).normal(size=(2, DIM))  # far: searched for
    update = loaded.update(moved, new[moved], 2, K, 0.1, fail_fetch)
    assert not update.rebuilt
    np.testing.assert_array_equal(update.graph.neighbors[moved], exact_graph(new)[moved])
    loaded.save(round_=1)
    assert list(tmp_path.glob("index-*")) == []


def test_refresh_keeps_recall_across_drifting_rounds(tmp_path: Path) -> None:
    """Rounds of rho = 0.3 re-embedding at tau = 0: small moves are joined, far ones
    re-queried; the graph stays close to the exact one over the current embeddings, without
    rebuilds. (Moves below tau keep their rows by design: tau is the caller's trade.)"""
    rng = np.random.default_rng(11)
    n = 1200
    centres = 3.0 * rng.standard_normal((15, DIM))
    vectors = (centres[rng.integers(0, 15, n)] + rng.standard_normal((n, DIM))).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    keeper = GraphKeeper(n, DIM, FACTORY, tmp_path)
    keeper.update(ids, vectors, 1, K, 0.0, lambda: (ids, vectors, 1))
    for r in range(2, 6):
        moved = np.sort(rng.choice(n, size=n * 3 // 10, replace=False))
        vectors[moved] += 0.25 * rng.standard_normal((moved.size, DIM)).astype(np.float32)
        vectors[moved[:5]] = rng.standard_normal((5, DIM)) * 3.0  # a few jump far
        update = keeper.update(moved, vectors[moved], r, K, 0.0, fail_fetch)
        assert not update.rebuilt
        assert update.joined > 0
        oracle = exact_graph_n(vectors)
        pairs = zip(update.graph.neighbors, oracle, strict=True)
        hits = sum(np.intersect1d(a, b).size for a, b in pairs)
        assert hits / oracle.size >= 0.9
        assert (update.graph.neighbors != np.arange(n)[:, None]).all()


def fail_fetch() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
    raise AssertionError("refresh must not rebuild from all embeddings")


def exact_graph_n(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
    index = BruteForceIndex(vectors.shape[1])
    index.upsert(np.arange(vectors.shape[0], dtype=np.int64), vectors)
    return index.knn_graph(K).neighbors


def test_a_move_every_fresh_row_shares_does_not_cut_them_off_from_stale_rows(
    tmp_path: Path,
) -> None:
    # Pooled states of a small LM: cosines near 1, and training shifts them all alike. Without
    # alignment the re-embedded tenth would link only to one another.
    rng = np.random.default_rng(7)
    common = np.zeros(DIM, np.float32)
    common[0] = 1.0
    vectors = (common + 0.01 * rng.normal(size=(N, DIM))).astype(np.float32)
    keeper = keeper_with(vectors, tmp_path)
    fresh = np.sort(rng.choice(N, size=N // 10, replace=False)).astype(np.int64)
    shift = np.zeros(DIM, np.float32)
    shift[1] = 0.05
    moved = (vectors[fresh] + shift + 0.0005 * rng.normal(size=(fresh.size, DIM))).astype(
        np.float32
    )
    update = keeper.update(fresh, moved, 2, K, 0.1, lambda: (np.arange(N), vectors, 2))
    rows = update.graph.neighbors[fresh]
    is_fresh = np.isin(rows, fresh)
    assert is_fresh.mean() < 0.3  # about the tenth chance gives, not all of them
    # And the fresh rows find the neighbours their unshifted states had.
    overlap = np.mean(
        [
            np.intersect1d(a, b).size / K
            for a, b in zip(rows, exact_graph(vectors)[fresh], strict=True)
        ]
    )
    assert overlap > 0.7


def test_sampled_recall_is_one_on_the_exact_graph_and_falls_with_damage() -> None:
    vectors = data(11)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    present = np.ones(N, dtype=np.bool_)
    index = BruteForceIndex(DIM)
    index.upsert(np.arange(N, dtype=np.int64), unit.astype(np.float32))
    exact = index.knn_graph(K)
    assert sampled_recall(exact, unit, present, seed=0) == 1.0
    damaged = exact.neighbors.copy()
    damaged[:, K // 2 :] = np.random.default_rng(0).integers(0, N, (N, K - K // 2))
    recall = sampled_recall(KnnGraph(damaged, exact.similarities), unit, present, seed=0)
    assert recall is not None
    assert 0.3 < recall < 0.8
    # float16 rows (GRACE_GRAPH_VECTORS=float16) give the same answer on this graph.
    half = sampled_recall(exact, unit.astype(np.float16), present, seed=0)
    assert half is not None
    assert half > 0.95
    assert sampled_recall(exact, unit, np.zeros(N, dtype=np.bool_), seed=0) is None


@pytest.mark.parametrize("block_rows", [7, 64, 100_000])
def test_sampled_recall_over_blocks_and_gaps_is_the_brute_force_share(
    monkeypatch: pytest.MonkeyPatch, block_rows: int
) -> None:
    # The exact search runs a block of rows at a time and merges each block's best k; rows
    # without embeddings are never candidates, and a row is never its own neighbour.
    monkeypatch.setattr(recall_module, "_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(5)
    unit = data(12)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    present = rng.random(N) < 0.8
    listed = rng.integers(0, N, (N, K)).astype(np.int32)
    got = sampled_recall(KnnGraph(listed, np.zeros((N, K), np.float32)), unit, present, 3, N)
    ids = np.flatnonzero(present)
    sims = unit[ids] @ unit[ids].T
    np.fill_diagonal(sims, -np.inf)
    true = ids[np.argsort(-sims, axis=1)[:, :K]]
    expected = sum(np.intersect1d(t, listed[i]).size for i, t in zip(ids, true, strict=True))
    assert got == pytest.approx(expected / (K * ids.size))


@pytest.mark.parametrize("floor", [0.0, 1.0])
def test_a_refresh_below_the_recall_floor_is_rebuilt(tmp_path: Path, floor: float) -> None:
    factory = IndexFactory("brute", brute, BruteForceIndex.load, recall_floor=floor)
    vectors = data(12)
    keeper = GraphKeeper(N, DIM, factory, tmp_path)
    ids = np.arange(N, dtype=np.int64)
    keeper.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
    moved, new = moved_a_third(vectors, 13)
    update = keeper.update(moved, new[moved], 2, K, 0.1, lambda: (ids, new, 2))
    assert update.recall is not None
    if floor == 0.0:  # reported, never acted on
        assert not update.rebuilt
    else:  # nothing short of exact passes a floor of 1: rebuilt, and exact again
        assert update.rebuilt or update.recall == 1.0
        if update.rebuilt:  # exact over the keeper's own (drift-aligned) vectors
            _, kept = keeper.held_vectors(ids)
            np.testing.assert_array_equal(update.graph.neighbors, exact_graph(kept))


def test_a_refresh_below_the_recall_target_joins_every_row_instead_of_rebuilding(
    tmp_path: Path,
) -> None:
    vectors = data(14)
    ids = np.arange(N, dtype=np.int64)
    moved, new = moved_a_third(vectors, 15)
    updates = {}
    for target in (0.0, 1.0):
        factory = IndexFactory(
            "brute", brute, BruteForceIndex.load, recall_floor=0.0, recall_target=target
        )
        keeper = GraphKeeper(N, DIM, factory, tmp_path / str(target))
        keeper.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
        updates[target] = keeper.update(moved, new[moved], 2, K, 0.1, lambda: (ids, new, 2))
    assert updates[0.0].recall is not None
    assert updates[0.0].recall < 1.0  # the case the target acts on
    assert updates[0.0].joined < N
    joined_all = updates[1.0]
    assert not joined_all.rebuilt
    assert joined_all.joined == N
    assert joined_all.recall is not None
    assert joined_all.recall >= updates[0.0].recall


def test_the_whole_list_pass_runs_only_when_the_local_join_leaves_recall_below_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = data(16)
    ids = np.arange(N, dtype=np.int64)
    moved, new = moved_a_third(vectors, 17)
    calls: list[str] = []
    local, whole = built_graph.join_every_neighborhood, built_graph.join_every_row

    def counted(name: str, fn: Any) -> Any:
        def run(*args: Any) -> KnnGraph:
            calls.append(name)
            graph: KnnGraph = fn(*args)
            return graph

        return run

    monkeypatch.setattr(graph_keeper, "join_every_row", counted("rows", whole))
    seen = {}
    for case in ("short", "enough"):
        if case == "enough":  # the local join brings the graph to exact: nothing more to do
            exact = counted("local", lambda built, ranks: exact_knn(built.vectors, 2 * K))
            monkeypatch.setattr(graph_keeper, "join_every_neighborhood", exact)
        else:
            monkeypatch.setattr(graph_keeper, "join_every_neighborhood", counted("local", local))
        factory = IndexFactory(
            "brute", brute, BruteForceIndex.load, recall_floor=0.0, recall_target=1.0
        )
        keeper = GraphKeeper(N, DIM, factory, tmp_path / case)
        keeper.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
        calls.clear()
        update = keeper.update(moved, new[moved], 2, K, 0.1, lambda: (ids, new, 2))
        seen[case] = list(calls)
        assert update.joined == N
        assert not update.rebuilt
    # Target 1: the local join alone leaves the sample below it, so the whole-list pass runs.
    assert seen["short"] == ["local", "rows"]
    assert seen["enough"] == ["local"]


def test_the_index_is_dropped_by_default_and_kept_by_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not ServiceSettings().graph_keep_index
    monkeypatch.setenv("GRACE_GRAPH_KEEP_INDEX", "true")
    settings = ServiceSettings()
    assert settings.graph_keep_index
    vectors = data(14)
    for keep in (False, True):
        factory = make_index_factory("hnsw", keep_index=keep)
        keeper = keeper_with(vectors, tmp_path / str(keep), factory)
        keeper.save(round_=0)
        assert len(list((tmp_path / str(keep)).glob("index-*"))) == int(keep)

"""The drift study's measurement: raw drift, the drift left once the shared move is out, and
the shares beyond tau and beyond each row's radius, read from the keeper's own state."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grace_lab.embedding_drift import drift_row, markdown
from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.keeper_types import IndexFactory

N, DIM, K = 120, 8, 5


def test_drift_row_separates_the_shared_move_from_each_rows_own(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    factory = IndexFactory("brute", BruteForceIndex, BruteForceIndex.load)
    keeper = GraphKeeper(N, DIM, factory, tmp_path)
    ids = np.arange(N, dtype=np.int64)
    # Flat like a small LM's pooled states: one shared direction and a small spread.
    vectors = (np.eye(DIM)[0] + 0.05 * rng.normal(size=(N, DIM))).astype(np.float32)
    assert drift_row(keeper, ids, vectors, 0.1) is None  # no graph yet
    keeper.update(ids, vectors, 1, K, 0.1, lambda: (ids, vectors, 1))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    moved = ids[:40]
    shifted = (unit[moved] + 0.3 * np.eye(DIM)[1]).astype(np.float32)  # a move all 40 share
    row = drift_row(keeper, moved, shifted, 0.1)
    assert row is not None
    assert row["rows"] == 40
    assert row["raw_median"] > 0.03
    assert row["aligned_median"] < row["raw_median"] / 3
    assert row["beyond_tau"] == 0.0
    assert 0.0 < row["radius_median"] <= 2.0
    assert "| 0 | 0.3 | 1 | 40 |" in markdown([{"seed": 0, "rho": 0.3, "round": 1, **row}])


def test_drift_row_ignores_samples_the_graph_does_not_hold(tmp_path: Path) -> None:
    factory = IndexFactory("brute", BruteForceIndex, BruteForceIndex.load)
    keeper = GraphKeeper(N, DIM, factory, tmp_path)
    half = np.arange(N // 2, dtype=np.int64)
    vectors = np.random.default_rng(1).normal(size=(N // 2, DIM)).astype(np.float32)
    keeper.update(half, vectors, 1, K, 0.1, lambda: (half, vectors, 1))
    others = np.arange(N // 2, N, dtype=np.int64)
    assert drift_row(keeper, others, vectors, 0.1) is None

"""A build reads a job's embeddings block by block under its lock (service.state.EmbeddedRows),
and a row re-embedded while it reads is taken in again by the next round."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from grace_selection.api.app import make_index_factory
from grace_selection.core.config import SelectionConfig
from grace_selection.service.batches import EmbeddingBatch
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.round_step import step_round
from grace_selection.service.state import JobArrays

N, DIM = 50, 8


def embedded_arrays() -> JobArrays:
    rng = np.random.default_rng(0)
    arrays = JobArrays(N, DIM)
    ids = np.arange(0, N, 2, dtype=np.int64)  # every other sample embedded
    vectors = rng.normal(size=(ids.size, DIM)).astype(np.float32)
    arrays.apply(EmbeddingBatch("e0", 0, ids, vectors, b""), 1)
    return arrays


def test_blocks_are_the_embedded_rows_and_hold_the_lock() -> None:
    arrays = embedded_arrays()
    lock = threading.Lock()
    rows = arrays.embedded_rows(lock)
    ids, copies, seq = arrays.embedded()
    np.testing.assert_array_equal(rows.ids, ids)
    assert rows.seq == seq
    assert rows.shape == (ids.size, DIM)
    np.testing.assert_array_equal(np.concatenate([rows[0:7], rows[7:100]]), copies)
    with lock:  # a reader waits for the lock: ingest never tears a row it copies
        reader = threading.Thread(target=lambda: rows[0:3])
        reader.start()
        reader.join(0.2)
        assert reader.is_alive()
    reader.join(5)
    assert not reader.is_alive()


def test_a_row_re_embedded_during_the_build_is_taken_in_next_round(tmp_path: Path) -> None:
    arrays = embedded_arrays()
    keeper = GraphKeeper(N, DIM, make_index_factory("brute"), tmp_path)
    rows = arrays.embedded_rows(threading.Lock())
    moved = np.array([4], dtype=np.int64)
    new = np.ones((1, DIM), dtype=np.float32)
    # Re-embedded after the ids were taken, before the build reads them.
    arrays.apply(EmbeddingBatch("e1", 1, moved, new, b""), 2)
    keeper.update(rows.ids, rows[0 : rows.ids.size], 1, 3, 0.1, lambda: (rows.ids, rows, rows.seq))
    assert keeper.seq == 1
    inputs = arrays.round_inputs(1, keeper.seq)
    np.testing.assert_array_equal(inputs.changed_ids, moved)
    config = SelectionConfig(k=3, rescore_fraction=0.3)
    previous = np.full(N, np.nan, np.float32)
    outcome = step_round(arrays, keeper, config, previous, round_=1, seed=0)
    held, vectors = keeper.held_vectors(moved)
    assert held.all()
    np.testing.assert_allclose(vectors[0], new[0] / np.linalg.norm(new[0]), atol=1e-6)
    assert outcome.update is not None

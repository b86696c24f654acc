"""One copy of the vectors: the one-process graph keeper holds the job's embedding matrix as its
unit vectors, and a new embedding waits in `pending` until a round takes it in
(service.state, service.pending_rows).

The rounds are the rounds a job that keeps two copies computes (graph and coreset, pick for
pick), a restart at any point between rounds computes the same next round, a round that fails
gives its rows back, and the keeper allocates no vectors of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from grace_selection.adapters.local_store import LocalScoreStore
from grace_selection.adapters.store_records import StateSnapshot
from grace_selection.api.app import make_index_factory
from grace_selection.core.config import SelectionConfig
from grace_selection.service.batches import EmbeddingBatch, ScoreBatch
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.pending_rows import PendingRows
from grace_selection.service.round_step import RoundOutcome, step_round
from grace_selection.service.state import JobArrays

N, DIM, K = 300, 16, 5
CONFIG = SelectionConfig(k=K, rescore_fraction=0.3, budget_fraction=0.1)


def batches(rounds: int) -> list[tuple[int, EmbeddingBatch | ScoreBatch]]:
    """(round before which it arrives, batch): all rows, then 30% re-embedded each round with
    a shared move (what realign takes out) and noise, plus scores."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, DIM))
    current = centres[rng.integers(0, 12, N)] + 0.3 * rng.normal(size=(N, DIM))
    ids = np.arange(N, dtype=np.int64)
    out: list[tuple[int, EmbeddingBatch | ScoreBatch]] = [
        (0, EmbeddingBatch("e0", 0, ids, current.astype(np.float32), b"")),
        (
            0,
            ScoreBatch(
                "s0", "worker", 0, 0, ids, None, rng.gamma(2.0, size=N).astype(np.float32), b""
            ),
        ),
    ]
    for r in range(1, rounds):
        moved = np.sort(rng.choice(N, size=int(0.3 * N), replace=False)).astype(np.int64)
        shift = 0.5 * rng.normal(size=DIM)
        current[moved] += shift + 0.2 * rng.normal(size=(moved.size, DIM))
        half = moved.size // 2  # two batches: the second re-embeds some rows again
        out.append(
            (
                r,
                EmbeddingBatch(
                    f"e{r}a", r, moved[:half], current[moved[:half]].astype(np.float32), b""
                ),
            )
        )
        again = moved[: half // 2]
        current[again] += 0.05 * rng.normal(size=(again.size, DIM))
        second = np.union1d(moved[half:], again).astype(np.int64)
        out.append(
            (r, EmbeddingBatch(f"e{r}b", r, second, current[second].astype(np.float32), b""))
        )
        importance = rng.gamma(2.0, size=moved.size).astype(np.float32)
        out.append((r, ScoreBatch(f"s{r}", "worker", r, 0, moved, None, importance, b"")))
    return out


class Run:
    """A job's arrays and keeper, fed the batches in log order (seq 1, 2, ...)."""

    def __init__(self, folder: Path, shared: bool) -> None:
        self.arrays = JobArrays(N, DIM, shared=shared)
        self.keeper = GraphKeeper(N, DIM, make_index_factory("brute"), folder)
        self.previous = np.full(N, np.nan, np.float32)
        self.seq = 0

    def apply(self, batch: EmbeddingBatch | ScoreBatch) -> None:
        self.seq += 1
        self.arrays.apply(batch, self.seq)

    def round(self, r: int) -> RoundOutcome:
        outcome = step_round(self.arrays, self.keeper, CONFIG, self.previous, round_=r, seed=11)
        self.previous = outcome.result.importance
        return outcome


def run_rounds(
    run: Run, rounds: int, between: Callable[[Run, int], Run] | None = None
) -> list[RoundOutcome]:
    """Every round, with `between(run, r)` (a restart, say) called after round r's batches."""
    log = batches(rounds)
    outcomes = []
    for r in range(rounds):
        for _, batch in (item for item in log if item[0] == r):
            run.apply(batch)
        if between is not None:
            run = between(run, r)
        outcomes.append(run.round(r))
    return outcomes


def assert_same(a: RoundOutcome, b: RoundOutcome) -> None:
    np.testing.assert_array_equal(a.graph.neighbors, b.graph.neighbors)
    np.testing.assert_allclose(a.graph.similarities, b.graph.similarities, atol=1e-6)
    np.testing.assert_array_equal(a.result.coreset.indices, b.result.coreset.indices)


def test_pending_rows_keep_the_newest_row_of_each_sample() -> None:
    pending = PendingRows(10, 2)
    pending.put(np.array([5, 2]), np.array([[1, 1], [2, 2]], np.float32))
    pending.put(np.array([2, 7]), np.array([[3, 3], [4, 4]], np.float32))
    waiting, rows = pending.rows_of(np.array([2, 3, 7]))
    np.testing.assert_array_equal(waiting, [True, False, True])
    np.testing.assert_array_equal(rows, [[3, 3], [4, 4]])
    pending.drop(np.array([5, 9]))
    taken = pending.take()
    np.testing.assert_array_equal(taken.ids, [2, 7])  # sorted, 5 dropped
    np.testing.assert_array_equal(taken.rows, [[3, 3], [4, 4]])
    assert pending.count == 0
    assert not pending.rows_of(np.array([2]))[0].any()


def test_pending_rows_grow_past_their_room() -> None:
    pending = PendingRows(20_000, 3)
    rng = np.random.default_rng(0)
    for start in range(0, 20_000, 3000):
        ids = np.arange(start, min(start + 3000, 20_000), dtype=np.int64)
        pending.put(ids, np.repeat(ids[:, None], 3, axis=1).astype(np.float32))
    taken = pending.take()
    assert taken.ids.size == 20_000
    pick = rng.choice(20_000, 50)
    np.testing.assert_array_equal(taken.rows[pick, 0], pick)


def test_the_keeper_holds_the_jobs_matrix_and_computes_the_same_rounds(tmp_path: Path) -> None:
    shared = run_rounds(Run(tmp_path / "shared", shared=True), 5)
    two_copies = run_rounds(Run(tmp_path / "copies", shared=False), 5)
    for a, b in zip(shared, two_copies, strict=True):
        assert_same(a, b)
    assert any(o.update is not None and not o.update.rebuilt for o in shared[1:])


def test_the_keeper_allocates_no_vectors_of_its_own(tmp_path: Path) -> None:
    run = Run(tmp_path, shared=True)
    run_rounds(run, 3)
    built = run.keeper._built
    assert built is not None
    assert built.vectors is run.arrays.embeddings
    assert run.arrays.held
    assert run.arrays.pending.count == 0
    norms = np.linalg.norm(run.arrays.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)  # the graph's unit vectors


def test_an_embedding_waits_for_the_next_round(tmp_path: Path) -> None:
    run = Run(tmp_path, shared=True)
    run_rounds(run, 2)
    assert run.arrays.embeddings is not None
    before = run.arrays.embeddings.copy()
    row = np.full((1, DIM), 3.0, np.float32)
    run.apply(EmbeddingBatch("late", 2, np.array([4], np.int64), row, b""))
    np.testing.assert_array_equal(run.arrays.embeddings, before)  # the graph's rows stay
    np.testing.assert_array_equal(run.arrays.newest_rows(np.array([4, 5]))[0], row[0])
    run.round(2)
    held, vectors = run.keeper.held_vectors(np.array([4], np.int64))
    assert held.all()
    np.testing.assert_allclose(vectors[0], row[0] / np.linalg.norm(row[0]), atol=1e-6)


def restart(folder: Path, compact: bool, save_graph: bool) -> Callable[[Run, int], Run]:
    """Restart the job after round r's batches arrived: from a snapshot (if `compact`, taken
    then; otherwise from the log alone) and the graph saved after the last round."""

    def between(run: Run, r: int) -> Run:
        if r == 0:
            return run
        if save_graph:
            run.keeper.save(r - 1)
        again = Run(folder, shared=True)
        again.previous = run.previous
        if compact:
            again.arrays.load_snapshot(run.seq, run.arrays.snapshot_arrays())
            again.seq = run.seq
        else:
            for _, batch in (item for item in batches(r + 1) if item[0] <= r):
                again.apply(batch)
        again.keeper.load(again.arrays.adopt_graph)
        return again

    return between


@pytest.mark.parametrize(
    ("compact", "save_graph"), [(True, True), (False, True), (True, False), (False, False)]
)
def test_a_restart_between_rounds_computes_the_same_rounds(
    tmp_path: Path, compact: bool, save_graph: bool
) -> None:
    live = run_rounds(Run(tmp_path / "live", shared=True), 4)
    restarted = run_rounds(
        Run(tmp_path / "job", shared=True), 4, restart(tmp_path / "job", compact, save_graph)
    )
    if not save_graph:  # rebuilt from the held rows: the graph of the same vectors
        for a, b in zip(live, restarted, strict=True):
            assert a.result.coreset.indices.size == b.result.coreset.indices.size
        return
    for a, b in zip(live, restarted, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("held", [False, True])
def test_a_snapshot_older_than_the_graph_takes_the_graphs_vectors(
    tmp_path: Path, held: bool
) -> None:
    """The job was compacted before round 1 (held: after round 0 and round 1's batches, which
    then wait in the snapshot; otherwise before round 0, raw rows), the graph saved after it."""
    run = Run(tmp_path / "job", shared=True)
    log = batches(3)
    for _, batch in (item for item in log if item[0] == 0):
        run.apply(batch)
    snapshot_seq, snapshot = run.seq, run.arrays.snapshot_arrays()
    run.round(0)
    for _, batch in (item for item in log if item[0] == 1):
        run.apply(batch)
    if held:
        snapshot_seq, snapshot = run.seq, run.arrays.snapshot_arrays()
        assert snapshot["pending_ids"].size > 0
        snapshot["embeddings"] = snapshot["embeddings"].copy()  # as the store has written it
    run.round(1)
    run.keeper.save(1)
    again = Run(tmp_path / "job", shared=True)
    again.arrays.load_snapshot(snapshot_seq, snapshot)
    again.seq = snapshot_seq
    for _, batch in (item for item in log if item[0] == 1 and not held):
        again.apply(batch)  # replayed after the snapshot: the graph already took them in
    assert again.keeper.load(again.arrays.adopt_graph)
    assert again.arrays.pending.count == 0
    np.testing.assert_array_equal(again.arrays.embeddings, run.arrays.embeddings)
    np.testing.assert_array_equal(again.arrays.in_matrix, run.arrays.in_matrix)


def test_a_graph_older_than_the_held_rows_is_rebuilt(tmp_path: Path) -> None:
    run = Run(tmp_path / "job", shared=True)
    run_rounds(run, 2)
    run.keeper.save(1)
    again = Run(tmp_path / "job", shared=True)
    again.arrays.load_snapshot(run.seq, run.arrays.snapshot_arrays())
    again.arrays.held_seq += 1  # as if a later round's save had failed: the rows are newer
    assert not again.keeper.load(again.arrays.adopt_graph)
    outcome = again.round(2)
    assert outcome.update is not None
    assert outcome.update.rebuilt


def test_a_failed_round_gives_its_rows_back(tmp_path: Path) -> None:
    run = Run(tmp_path, shared=True)
    run_rounds(run, 2)
    ids = np.array([3, 8], np.int64)
    run.apply(EmbeddingBatch("a", 2, ids, np.ones((2, DIM), np.float32), b""))
    update = run.keeper.update

    def failing(*args: object, **kwargs: object) -> object:
        # A newer row of sample 8 arrives while the round computes.
        newer = np.full((1, DIM), 2.0, np.float32)
        run.apply(EmbeddingBatch("b", 2, np.array([8], np.int64), newer, b""))
        raise RuntimeError("boom")

    run.keeper.update = failing  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        run.round(2)
    waiting, rows = run.arrays.pending.rows_of(ids)
    assert waiting.all()
    assert rows[1, 0] == 2.0  # the newer row is kept
    run.keeper.update = update  # type: ignore[method-assign]
    run.round(2)
    held, vectors = run.keeper.held_vectors(ids)
    assert held.all()
    assert run.arrays.pending.count == 0
    assert vectors[1, 0] == pytest.approx(vectors[1, 1])


def test_a_float16_job_stores_its_matrix_in_float16(tmp_path: Path) -> None:
    arrays = JobArrays(N, DIM, shared=True, matrix_dtype="float16")
    keeper = GraphKeeper(N, DIM, make_index_factory("brute", vector_dtype="float16"), tmp_path)
    rows = np.full((N, DIM), 1e5, np.float32)  # beyond float16's range unless normalised
    rows[:, 0] += np.arange(N)
    arrays.apply(EmbeddingBatch("e", 0, np.arange(N, dtype=np.int64), rows, b""), 1)
    assert arrays.embeddings is not None
    assert arrays.embeddings.dtype == np.float16
    assert np.isfinite(arrays.embeddings).all()
    step_round(arrays, keeper, CONFIG, np.full(N, np.nan, np.float32), round_=0, seed=1)
    assert keeper._built is not None
    assert keeper._built.vectors is arrays.embeddings


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_held_jobs_snapshot_goes_through_the_store(tmp_path: Path, dtype: str) -> None:
    """Compaction writes the held matrix, the waiting rows and what is held; a float16 matrix
    too (the store once kept float32 alone)."""
    run = Run(tmp_path / "job", shared=True)
    run.arrays = JobArrays(N, DIM, shared=True, matrix_dtype=dtype)
    run.keeper = GraphKeeper(
        N, DIM, make_index_factory("brute", vector_dtype=dtype), tmp_path / "job"
    )
    run_rounds(run, 2)
    late = np.arange(5, dtype=np.int64)
    run.apply(EmbeddingBatch("late", 2, late, np.ones((5, DIM), np.float32), b""))
    store = LocalScoreStore(tmp_path / "store")
    store.create_job("j", b"{}")
    for i in range(run.seq):
        store.append_batch("j", "scores", f"b{i}", b"x")
    store.write_snapshot("j", StateSnapshot(run.seq, run.arrays.snapshot_arrays()))
    snapshot = store.read_snapshot("j")
    assert snapshot is not None
    again = JobArrays(N, DIM, shared=True, matrix_dtype=dtype)
    again.load_snapshot(snapshot.seq, dict(snapshot.arrays))
    assert again.held
    assert again.held_seq == run.arrays.held_seq
    assert again.embeddings is not None
    assert again.embeddings.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(again.embeddings, run.arrays.embeddings)
    np.testing.assert_array_equal(again.in_matrix, run.arrays.in_matrix)
    np.testing.assert_array_equal(again.newest_rows(late), np.ones((5, DIM), np.float32))

"""One contract for every ScoreStore: the embedded file store and Redis (a real redis-server)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grace_selection.adapters.local_store import LocalScoreStore
from grace_selection.adapters.ports import ScoreStore
from grace_selection.adapters.redis_store import RedisScoreStore
from grace_selection.adapters.store_records import (
    RoundExistsError,
    StateSnapshot,
    StoredRound,
    compute_checksum,
)

StoreFactory = Callable[[], ScoreStore]
_job_numbers = itertools.count()


@pytest.fixture(params=["local", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory: each call opens the same backing data anew (as a restarted process would).

    Redis uses 64-byte chunks so that every array spans several chunks."""
    opened: list[ScoreStore] = []

    def factory() -> ScoreStore:
        store: ScoreStore
        if request.param == "local":
            store = LocalScoreStore(tmp_path / "data")
        else:
            store = RedisScoreStore(request.getfixturevalue("redis_url"), chunk_bytes=64)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def new_job(store: ScoreStore, spec: bytes = b'{"n": 10}') -> str:
    job = f"job-{next(_job_numbers)}"
    assert store.create_job(job, spec)
    return job


def test_create_job_once_and_read_it_back(open_store: StoreFactory) -> None:
    store = open_store()
    assert store.create_job("alpha", b'{"a": 1}')
    assert not store.create_job("alpha", b'{"a": 2}'), "a second create must not overwrite"
    assert store.create_job("beta", b'{"b": 1}')
    assert store.read_jobs() == {"alpha": b'{"a": 1}', "beta": b'{"b": 1}'}
    assert open_store().read_jobs() == {"alpha": b'{"a": 1}', "beta": b'{"b": 1}'}


def test_delete_job_removes_everything(open_store: StoreFactory) -> None:
    store = open_store()
    job = new_job(store)
    store.append_batch(job, "scores", "b1", b"payload")
    store.put_document(job, "checkpoint", b"{}")
    store.publish_round(job, StoredRound(0, b"{}", {"indices": np.arange(3, dtype=np.int64)}))
    store.delete_job(job)
    assert job not in store.read_jobs()
    assert store.read_manifests(job) == {}
    assert store.get_document(job, "checkpoint") is None
    # The id is free again, and its old batches are gone with it.
    assert store.create_job(job, b"{}")
    assert not store.append_batch(job, "scores", "b1", b"payload").duplicate
    assert [e.seq for e in store.read_log(job)] == [1]


def test_append_is_idempotent_by_kind_and_batch_id(open_store: StoreFactory) -> None:
    store = open_store()
    job = new_job(store)
    first = store.append_batch(job, "scores", "b1", b"one")
    again = store.append_batch(job, "scores", "b1", b"one")
    reused = store.append_batch(job, "scores", "b1", b"something else")
    other_kind = store.append_batch(job, "embeddings", "b1", b"two")
    assert (first.seq, first.duplicate, first.checksum) == (
        1,
        False,
        compute_checksum(b"one"),
    )
    assert (again.seq, again.duplicate, again.checksum) == (
        1,
        True,
        compute_checksum(b"one"),
    )
    # A reused id reports the stored compute_checksum, so the caller can tell the payloads differ.
    assert reused.duplicate
    assert reused.checksum == compute_checksum(b"one")
    assert (other_kind.seq, other_kind.duplicate) == (2, False)
    entries = list(open_store().read_log(job))
    assert [(e.seq, e.kind, e.batch_id, e.payload) for e in entries] == [
        (1, "scores", "b1", b"one"),
        (2, "embeddings", "b1", b"two"),
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.tuples(st.sampled_from(["scores", "embeddings"]), st.integers(0, 6), st.binary()),
        max_size=20,
    ),
    after=st.integers(0, 25),
)
def test_log_is_the_deduplicated_sequence_of_appends(
    open_store: StoreFactory, batches: list[tuple[str, int, bytes]], after: int
) -> None:
    store = open_store()
    job = new_job(store)
    expected: list[tuple[int, str, str, bytes]] = []
    seen: set[tuple[str, str]] = set()
    for kind, number, payload in batches:
        result = store.append_batch(job, kind, f"b{number}", payload)
        assert result.duplicate == ((kind, f"b{number}") in seen)
        if not result.duplicate:
            seen.add((kind, f"b{number}"))
            expected.append((len(expected) + 1, kind, f"b{number}", payload))
            assert result.seq == len(expected)
    log = [(e.seq, e.kind, e.batch_id, e.payload) for e in open_store().read_log(job, after)]
    assert log == [entry for entry in expected if entry[0] > after]


def test_snapshot_round_trip_and_compaction(open_store: StoreFactory) -> None:
    store = open_store()
    job = new_job(store)
    for i in range(5):
        store.append_batch(job, "scores", f"b{i}", bytes([i]) * 100)
    rng = np.random.default_rng(0)
    arrays: dict[str, npt.NDArray[Any]] = {
        "embeddings": rng.normal(size=(37, 5)).astype(np.float32),
        "scored_round": rng.integers(-1, 4, size=37).astype(np.int32),
        "seqs": rng.integers(0, 2**40, size=37).astype(np.int64),
        "mask": rng.random(37) < 0.5,
        "empty": np.zeros((0, 5), dtype=np.float32),
    }
    store.write_snapshot(job, StateSnapshot(seq=3, arrays=arrays))
    store.append_batch(job, "scores", "b5", b"late")
    reopened = open_store()
    snap = reopened.read_snapshot(job)
    assert snap is not None
    assert snap.seq == 3
    assert sorted(snap.arrays) == sorted(arrays)
    for name, value in arrays.items():
        assert snap.arrays[name].dtype == value.dtype, name
        np.testing.assert_array_equal(snap.arrays[name], value)
    assert [e.seq for e in reopened.read_log(job, after_seq=snap.seq)] == [4, 5, 6]
    # Batch ids covered by the snapshot stay known after compaction and reopening.
    assert reopened.append_batch(job, "scores", "b0", b"\x00" * 100).duplicate
    assert reopened.append_batch(job, "scores", "b9", b"new").seq == 7


def test_second_snapshot_replaces_the_first(open_store: StoreFactory) -> None:
    store = open_store()
    job = new_job(store)
    store.append_batch(job, "scores", "a", b"1")
    store.write_snapshot(job, StateSnapshot(1, {"x": np.arange(10, dtype=np.int64)}))
    store.append_batch(job, "scores", "b", b"2")
    store.write_snapshot(job, StateSnapshot(2, {"x": np.arange(20, dtype=np.int64)}))
    snap = open_store().read_snapshot(job)
    assert snap is not None
    assert snap.seq == 2
    np.testing.assert_array_equal(snap.arrays["x"], np.arange(20))
    assert list(store.read_log(job, 2)) == []
    assert store.append_batch(job, "scores", "c", b"3").seq == 3


def test_snapshot_of_a_job_without_one_is_none(open_store: StoreFactory) -> None:
    store = open_store()
    assert store.read_snapshot(new_job(store)) is None


def test_publish_round_is_atomic_and_immutable(open_store: StoreFactory) -> None:
    store = open_store()
    job = new_job(store)
    rng = np.random.default_rng(1)
    arrays: dict[str, npt.NDArray[Any]] = {
        "indices": np.sort(rng.choice(1000, 100, replace=False)).astype(np.int64),
        "weights": rng.random(100).astype(np.float32),
        "importance": rng.random(1000).astype(np.float32),
    }
    manifest = json.dumps({"round": 0, "count": 100}).encode()
    store.publish_round(job, StoredRound(0, manifest, arrays))
    with pytest.raises(RoundExistsError):
        store.publish_round(job, StoredRound(0, b"{}", {"indices": np.arange(3)}))
    store.publish_round(job, StoredRound(1, b'{"round": 1}', {"indices": np.arange(2)}))
    reopened = open_store()
    stored = reopened.read_round(job, 0)
    assert stored is not None
    assert stored.manifest == manifest
    for name, value in arrays.items():
        np.testing.assert_array_equal(stored.arrays[name], value)
        assert stored.arrays[name].dtype == value.dtype
    assert reopened.read_round(job, 7) is None
    assert reopened.read_manifests(job) == {0: manifest, 1: b'{"round": 1}'}


def test_read_round_values_reads_single_elements(open_store: StoreFactory) -> None:
    store = open_store()
    job = new_job(store)
    importance = np.arange(500, dtype=np.float32) / 7
    store.publish_round(job, StoredRound(0, b"{}", {"importance": importance}))
    ids = np.array([0, 15, 16, 17, 255, 499, 16], dtype=np.int64)
    values = store.read_round_values(job, 0, "importance", ids)
    assert values is not None
    np.testing.assert_array_equal(values, importance[ids])
    assert store.read_round_values(job, 0, "missing", ids) is None
    assert store.read_round_values(job, 3, "importance", ids) is None


def test_documents_are_replaced_whole(open_store: StoreFactory) -> None:
    store = open_store()
    job = new_job(store)
    assert store.get_document(job, "checkpoint") is None
    store.put_document(job, "checkpoint", b'{"step": 1}')
    store.put_document(job, "checkpoint", b'{"step": 2}')
    assert open_store().get_document(job, "checkpoint") == b'{"step": 2}'


def test_ping_answers_when_the_store_is_up(open_store: StoreFactory) -> None:
    open_store().ping()

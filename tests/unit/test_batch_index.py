"""The local store's record of applied batch ids: exact answers, compact once covered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.adapters.batch_index import BatchIndex
from grace_selection.adapters.local_store import LocalScoreStore


@settings(max_examples=30, deadline=None)
@given(keys=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=60, unique=True))
def test_answers_are_exact_before_and_after_compaction(keys: list[str]) -> None:
    index = BatchIndex()
    for seq, key in enumerate(keys, start=1):
        index.add(key, crc=seq * 7, seq=seq)
    through = len(keys) // 2
    index.compact(index.covered_through(through), through)
    assert len(index.recent) == len(keys) - through
    for seq, key in enumerate(keys, start=1):
        assert index.get(key) == (seq * 7, seq)
    assert index.get(keys[0] + "-never-sent") is None


def test_covered_entries_cost_28_bytes_not_a_dict_entry() -> None:
    index = BatchIndex()
    for seq in range(1, 10_001):
        index.add(f"scores:trainer.run.k0.r0.s{seq}.n0.c0", crc=seq, seq=seq)
    covered = index.covered_through(10_000)
    index.compact(covered, 10_000)
    assert index.recent == {}
    assert covered.nbytes == 28 * 10_000


def test_a_snapshot_of_an_older_version_is_read(tmp_path: Path) -> None:
    (tmp_path / "batches.json").write_text(json.dumps({"scores:a": [5, 1], "embeddings:b": [6, 2]}))
    index = BatchIndex.load(tmp_path)
    assert index.get("scores:a") == (5, 1)
    assert index.get("embeddings:b") == (6, 2)
    assert index.get("scores:b") is None


def test_duplicates_are_recognised_after_compaction_and_a_restart(tmp_path: Path) -> None:
    from grace_selection.adapters.store_records import StateSnapshot, compute_checksum

    store = LocalScoreStore(tmp_path)
    assert store.create_job("j", b"{}")
    for i in range(5):
        assert not store.append_batch("j", "scores", f"b{i}", f"payload {i}".encode()).duplicate
    store.write_snapshot("j", StateSnapshot(5, {"loss": np.zeros(3, np.float32)}))
    again = store.append_batch("j", "scores", "b2", b"payload 2")
    assert (again.duplicate, again.seq) == (True, 3)
    assert not store.append_batch("j", "scores", "b5", b"payload 5").duplicate
    store.close()
    reopened = LocalScoreStore(tmp_path)
    for i in range(6):
        answer = reopened.append_batch("j", "scores", f"b{i}", f"payload {i}".encode())
        assert (answer.duplicate, answer.seq) == (True, i + 1)
    other = reopened.append_batch("j", "scores", "b1", b"other content")
    assert other.duplicate  # the store answers with the stored crc: the service refuses a reuse
    assert other.checksum == compute_checksum(b"payload 1") != compute_checksum(b"other content")

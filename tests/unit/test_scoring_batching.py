"""Batch planning, idempotency keys, padding, and the pool's resource arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_workers.batching import batch_key, collate, plan_batches, response_mask
from grace_workers.dataset import DatasetFormatError, TokenDataset, write_dataset
from grace_workers.pool import default_shards, gpus_per_actor


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 50), min_size=1, max_size=80),
    batch_size=st.integers(1, 17),
    data=st.data(),
)
def test_batches_partition_the_shard_longest_first(
    lengths: list[int], batch_size: int, data: st.DataObject
) -> None:
    n = len(lengths)
    ids = np.asarray(
        data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n)), dtype=np.int64
    )
    lens = np.asarray(lengths, dtype=np.int64)
    batches = plan_batches(ids, lens, batch_size)
    flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    assert sorted(flat.tolist()) == sorted(ids.tolist())  # every id exactly once
    assert all(1 <= b.size <= batch_size for b in batches)
    assert all(b.size == batch_size for b in batches[:-1])  # only the last may be short
    assert (np.diff(lens[flat]) <= 0).all()  # longest first: little padding per batch
    again = plan_batches(ids.copy(), lens, batch_size)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


@settings(max_examples=60, deadline=None)
@given(
    job=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,62}", fullmatch=True),
    round_=st.integers(0, 10**6),
    of=st.integers(1, 4096),
    index=st.integers(0, 10**6),
    ids=st.lists(st.integers(0, 2**40), min_size=1, max_size=20),
)
def test_batch_keys_are_deterministic_short_and_distinct(
    job: str, round_: int, of: int, index: int, ids: list[int]
) -> None:
    shard = index % of
    key = batch_key(job, round_, shard, of, index, ids)
    assert key == batch_key(job, round_, shard, of, index, list(ids))
    assert len(key) + len("/scores") <= 128
    assert key != batch_key(job, round_ + 1, shard, of, index, ids)
    assert key != batch_key(job, round_, shard, of, index + 1, ids)
    assert key != batch_key(job, round_, shard, of, index, [*ids, 2**41])


def test_collate_pads_right_and_truncates(tmp_path: Path) -> None:
    ds = write_dataset(
        tmp_path / "d", [np.arange(1, 6), np.array([7, 8]), np.arange(1, 10)], vocab_size=16
    )
    ids, mask = collate(ds, np.array([0, 1, 2], dtype=np.int64), max_tokens=6)
    assert ids.shape == (3, 6)
    assert mask.sum(dim=1).tolist() == [5, 2, 6]
    assert ids[1].tolist() == [7, 8, 0, 0, 0, 0]
    assert ids[2].tolist() == [1, 2, 3, 4, 5, 6]
    assert (ids[mask == 0] == 0).all()


def test_response_mask_marks_each_pairs_response_and_survives_a_reopen(tmp_path: Path) -> None:
    samples = [np.arange(1, 6), np.array([7, 8, 9]), np.arange(1, 10)]
    ds = write_dataset(tmp_path / "d", samples, vocab_size=16, target_starts=[3, 1, 8])
    again = TokenDataset.open(tmp_path / "d")
    assert again.target_starts is not None
    assert again.target_starts.tolist() == [3, 1, 8]
    assert again.meta["has_target_starts"] is True
    ids, _ = collate(again, np.array([2, 0, 1], dtype=np.int64), max_tokens=None)
    mask = response_mask(again, np.array([2, 0, 1], dtype=np.int64), ids.shape[1])
    assert mask is not None
    assert mask.tolist() == [
        [0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 1, 1, 1, 1, 1, 1],  # padding past the end is cut by the attention mask
        [0, 1, 1, 1, 1, 1, 1, 1, 1],
    ]
    plain = write_dataset(tmp_path / "p", samples, vocab_size=16)
    assert response_mask(plain, np.array([0]), 5) is None
    assert ds.target_starts is not None


@pytest.mark.parametrize("starts", [[0, 1, 1], [5, 1, 1], [1, 1]])
def test_target_starts_that_leave_no_response_are_refused(
    tmp_path: Path, starts: list[int]
) -> None:
    samples = [np.arange(1, 6), np.array([7, 8, 9]), np.arange(1, 10)]
    with pytest.raises(DatasetFormatError, match="target_starts"):
        write_dataset(tmp_path / "d", samples, vocab_size=16, target_starts=starts)


@pytest.mark.parametrize(
    ("cluster", "workers", "requested", "expected"),
    [
        (0.0, 2, None, 0.0),  # CPU-only cluster: run on CPU, never wait for a GPU
        (1.0, 2, None, 0.5),  # one GPU shared by two actors
        (8.0, 2, None, 1.0),  # at most one GPU each by default
        (4.0, 8, None, 0.5),
        (0.0, 2, 0.25, 0.25),  # an explicit request wins
    ],
)
def test_gpus_per_actor(
    cluster: float, workers: int, requested: float | None, expected: float
) -> None:
    assert gpus_per_actor(cluster, workers, requested) == expected


@given(plan=st.integers(0, 10**6), workers=st.integers(1, 64), batch=st.integers(1, 512))
def test_default_shards_give_each_shard_work(plan: int, workers: int, batch: int) -> None:
    shards = default_shards(plan, workers, batch)
    assert 1 <= shards <= 4 * workers
    assert shards <= max(1, -(-plan // batch))  # never more shards than batches

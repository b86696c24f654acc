"""The tokenized dataset format: round trips, memory-mapped reads, refusals that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grace_workers.dataset import (
    OFFSETS_FILE,
    DatasetFormatError,
    TokenDataset,
    token_dtype_for,
    write_dataset,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=0, max_size=30),
    vocab_size=st.sampled_from([2, 300, 2**16, 2**16 + 1, 200_000]),
    seed=st.integers(0, 2**32 - 1),
    with_strata=st.booleans(),
)
def test_samples_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    vocab_size: int,
    seed: int,
    with_strata: bool,
) -> None:
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, vocab_size, n) for n in lengths]
    strata = rng.integers(0, 3, len(lengths)) if with_strata else None
    root = tmp_path_factory.mktemp("ds") / "data"
    ds = write_dataset(root, samples, vocab_size=vocab_size, strata=strata)
    reopened = TokenDataset.open(root)
    assert len(reopened) == len(samples)
    assert reopened.token_array.dtype == token_dtype_for(vocab_size)
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(reopened.tokens(i), sample)
    np.testing.assert_array_equal(reopened.lengths, np.asarray(lengths, dtype=np.int64))
    if strata is None:
        assert reopened.strata is None
    else:
        np.testing.assert_array_equal(reopened.strata, strata)
    assert ds.meta == reopened.meta
    # Written beside the target and renamed: no temporary directory is left behind.
    assert [p.name for p in root.parent.iterdir()] == ["data"]


def test_token_dtype_is_the_narrowest_that_fits() -> None:
    assert token_dtype_for(2**16) == np.dtype("<u2")
    assert token_dtype_for(2**16 + 1) == np.dtype("<u4")


def test_existing_directory_is_kept_unless_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_dataset(root, [np.array([1, 2])], vocab_size=4)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(root, [np.array([3])], vocab_size=4)
    write_dataset(root, [np.array([3, 3, 3])], vocab_size=4, overwrite=True)
    np.testing.assert_array_equal(TokenDataset.open(root).tokens(0), [3, 3, 3])


def test_out_of_vocabulary_tokens_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"0\.\.9"):
        write_dataset(tmp_path / "d", [np.array([1, 10])], vocab_size=10)
    assert not (tmp_path / "d").exists()


def test_malformed_directories_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"no meta\.json"):
        TokenDataset.open(tmp_path)
    root = tmp_path / "d"
    write_dataset(root, [np.array([1, 2]), np.array([3])], vocab_size=4)
    np.save(root / OFFSETS_FILE, np.array([0, 1, 5], dtype="<i8"))
    with pytest.raises(DatasetFormatError, match=r"offsets\.npy"):
        TokenDataset.open(root)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "format": "other/9"}))
    with pytest.raises(DatasetFormatError, match="rebuild"):
        TokenDataset.open(root)


def test_ids_outside_the_dataset_are_refused(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "d", [np.array([1, 2])] * 3, vocab_size=4)
    ds.check_ids(np.array([0, 2], dtype=np.int64))
    with pytest.raises(DatasetFormatError, match="sample id 3"):
        ds.check_ids(np.array([0, 3], dtype=np.int64))
    with pytest.raises(IndexError, match=r"0\.\.2"):
        ds.tokens(-1)

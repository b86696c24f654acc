"""Data from the ecosystem: Parquet, Hugging Face `save_to_disk` folders, AutoTokenizer dirs.

The folders are written by the real `datasets` and `transformers` (offline), so the readers
are checked against the formats as those libraries write them, not against our idea of them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import PreTrainedTokenizerFast

from grace_client import DatasetInfo
from grace_workers.dataset import TokenDataset
from grace_workers.dataset_builder import (
    DatasetBuildError,
    build_dataset,
    load_tokenizer,
    train_bpe_tokenizer,
)
from tests.unit.test_dataset_builder import make_texts, write_jsonl

SOURCES = ("kjv", "code", "web")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    texts = make_texts(80, seed=7)
    keys = random.Random(7).sample(range(100_000), len(texts))
    return [
        {"uid": f"u{k:06d}", "text": t, "source": SOURCES[i % 3], "n": i}
        for i, (k, t) in enumerate(zip(keys, texts, strict=True))
    ]


@pytest.fixture(scope="module")
def tokenizer(rows: list[dict[str, Any]]) -> Any:
    return train_bpe_tokenizer([r["text"] for r in rows], vocab_size=320)


def samples_of(ds: TokenDataset) -> list[list[int]]:
    return [ds.tokens(i).tolist() for i in range(len(ds))]


def test_parquet_and_hf_folders_build_what_the_same_jsonl_builds(
    tmp_path: Path, rows: list[dict[str, Any]], tokenizer: Any
) -> None:
    options: dict[str, Any] = {"id_column": "uid", "stratum_field": "source"}
    want = build_dataset(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "j", tokenizer,
                         **options)  # fmt: skip
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "one.parquet")
    (tmp_path / "parts").mkdir()
    pq.write_table(table.slice(0, 50), tmp_path / "parts" / "a.parquet")
    pq.write_table(table.slice(50), tmp_path / "parts" / "b.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"), num_shards=2)
    for source in ("one.parquet", "parts", "hf"):
        got = build_dataset(tmp_path / source, tmp_path / f"out-{source}", tokenizer, **options)
        assert got.meta["source_format"] == ("hf" if source == "hf" else "parquet")
        assert samples_of(got) == samples_of(want), source
        assert got.sample_keys() == want.sample_keys() == sorted(r["uid"] for r in rows)
        assert got.stratum_names == want.stratum_names == {0: "code", 1: "kjv", 2: "web"}
        np.testing.assert_array_equal(got.strata, want.strata)  # type: ignore[arg-type]
        np.testing.assert_array_equal(got.source_lines, want.source_lines)


def test_a_shuffled_hf_dataset_keeps_every_key_on_its_text(
    tmp_path: Path, rows: list[dict[str, Any]], tokenizer: Any
) -> None:
    """save_to_disk after shuffle/select writes the selected rows; ids still follow the keys."""
    hf = datasets.Dataset.from_list(rows).shuffle(seed=3).select(range(60))
    hf.save_to_disk(str(tmp_path / "hf"))
    ds = build_dataset(tmp_path / "hf", tmp_path / "ds", tokenizer, id_column="uid")
    assert len(ds) == 60
    text_of = {r["uid"]: r["text"] for r in rows}
    keys = ds.sample_keys()
    assert keys == sorted(hf["uid"])
    reloaded = load_tokenizer(tmp_path / "ds")
    for i in (0, 31, 59):
        assert reloaded.decode(ds.tokens(i).tolist()) == text_of[keys[i]]  # type: ignore[index]
        assert hf[int(ds.source_lines[i])]["uid"] == keys[i]  # type: ignore[index]


def test_class_label_strata_keep_their_names(
    tmp_path: Path, rows: list[dict[str, Any]], tokenizer: Any
) -> None:
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(SOURCES))}
    )
    labelled = [{"text": r["text"], "label": i % 3} for i, r in enumerate(rows)]
    datasets.Dataset.from_list(labelled, features=features).save_to_disk(str(tmp_path / "hf"))
    ds = build_dataset(tmp_path / "hf", tmp_path / "ds", tokenizer, stratum_field="label")
    assert ds.stratum_names == dict(enumerate(SOURCES))
    np.testing.assert_array_equal(ds.strata, np.arange(len(rows)) % 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        ("dict", r"a DatasetDict with splits train, test; pass one split's folder.*hf/train"),
        ("no-text", r"no column 'text' \(columns: body\); pass --text-field"),
        ("null-text", r"hf row 1: 'text' is None"),
        ("not-arrow", r"data-00000-of-00001\.arrow: not a readable Arrow stream"),
    ],
)
def test_bad_hf_folders_are_refused_with_the_fix(
    tmp_path: Path, tokenizer: Any, make: str, match: str
) -> None:
    if make == "dict":
        split = datasets.Dataset.from_dict({"text": ["a b c"]})
        datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "hf"))
    elif make == "no-text":
        datasets.Dataset.from_dict({"body": ["a b c"]}).save_to_disk(str(tmp_path / "hf"))
    else:
        datasets.Dataset.from_dict({"text": ["a b c", None]}).save_to_disk(str(tmp_path / "hf"))
    if make == "not-arrow":
        (tmp_path / "hf" / "data-00000-of-00001.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(DatasetBuildError, match=match):
        build_dataset(tmp_path / "hf", tmp_path / "ds", tokenizer)


def test_tokenizer_directories_load_as_auto_tokenizer_does(
    tmp_path: Path, tokenizer: Any, rows: list[dict[str, Any]]
) -> None:
    """A save_pretrained folder (tokenizer.json + config) and a slow-only GPT-2 style folder
    (vocab.json + merges.txt + config, no tokenizer.json) tokenize as the tokenizer itself."""
    fast = tmp_path / "fast"
    as_fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")  # type: ignore[no-untyped-call]
    as_fast.save_pretrained(str(fast))
    slow = tmp_path / "slow"
    slow.mkdir()
    tokenizer.model.save(str(slow))  # vocab.json + merges.txt
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    assert not (slow / "tokenizer.json").exists()
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    want = build_dataset(jsonl, tmp_path / "want", tokenizer)
    for folder in (fast, slow):
        loaded = load_tokenizer(folder)
        assert not hasattr(loaded, "encode_batch")  # a transformers tokenizer, not tokenizers'
        got = build_dataset(jsonl, tmp_path / f"got-{folder.name}", loaded)
        assert samples_of(got) == samples_of(want), folder.name
        assert got.vocab_size == want.vocab_size
        assert got.meta["tokenizer"] == "tokenizer.json"  # the fast backend, saved for readers
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(DatasetBuildError, match="AutoTokenizer cannot load it"):
        load_tokenizer(tmp_path / "broken")


def test_dataset_info_makes_the_job_request(
    tmp_path: Path, rows: list[dict[str, Any]], tokenizer: Any
) -> None:
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    ds = build_dataset(tmp_path / "hf", tmp_path / "ds", tokenizer, id_column="uid",
                       stratum_field="source")  # fmt: skip
    info = DatasetInfo.open(tmp_path / "ds")
    request = info.job_request("my-job", dim=16, seed=4)
    assert (request.job_id, request.n_samples, request.dim, request.seed) == ("my-job", 80, 16, 4)
    assert request.stratum_names == {0: "code", 1: "kjv", 2: "web"}
    assert request.strata == ds.strata.tolist()  # type: ignore[union-attr]
    assert request.text_source == str((tmp_path / "ds" / "text.jsonl").resolve())
    np.testing.assert_array_equal(info.source_rows, ds.source_lines)
    hf = datasets.load_from_disk(str(tmp_path / "hf")).select(info.source_rows)
    assert hf["uid"] == ds.sample_keys()  # the input, reordered: row i is sample i
    assert info.job_request("j", dim=8, strata=None).strata is None
    with pytest.raises(ValueError, match="grace build-dataset"):
        DatasetInfo.open(tmp_path / "hf")

"""Building datasets from JSONL with a BPE tokenizer trained offline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from grace_workers.dataset import TokenDataset
from grace_workers.dataset_builder import (
    DatasetBuildError,
    build_dataset,
    load_tokenizer,
    train_bpe_tokenizer,
)

_WORD_LINE = (
    "the quick brown fox jumps over lazy dog while seven wise owls watch from an old oak "
    "tree near quiet river banks where children play ball and sing songs about summer rain"
)
WORDS = tuple(_WORD_LINE.split(" "))


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 25))) + "." for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_build_round_trips_text_and_strata(tmp_path: Path) -> None:
    texts = make_texts(300)
    rows: list[dict[str, object]] = [
        {"id": i, "text": t, "stratum": i % 3} for i, t in enumerate(texts)
    ]
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=600)
    ds = build_dataset(jsonl, tmp_path / "ds", tokenizer)
    assert len(ds) == 300
    assert ds.vocab_size == tokenizer.get_vocab_size()
    np.testing.assert_array_equal(ds.strata, np.arange(300) % 3)
    np.testing.assert_array_equal(ds.source_lines, np.arange(300))
    reloaded = load_tokenizer(tmp_path / "ds")  # the dataset carries its tokenizer.json
    for i in (0, 17, 299):
        assert reloaded.decode(ds.tokens(i).tolist()) == texts[i]
    # BPE merges frequent words: fewer tokens than characters.
    assert int(ds.lengths.sum()) < sum(len(t) for t in texts) / 2


def test_max_tokens_truncates(tmp_path: Path) -> None:
    texts = make_texts(50, seed=1)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    tokenizer = train_bpe_tokenizer(texts, vocab_size=280)
    ds = build_dataset(jsonl, tmp_path / "ds", tokenizer, max_tokens=5)
    assert int(ds.lengths.max()) == 5
    assert ds.strata is None
    assert TokenDataset.open(tmp_path / "ds").meta["max_tokens"] == 5


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"text": "a b c"}', "not json"], r"in\.jsonl:2: not valid JSON"),
        (['{"body": "a b c"}'], "--text-field"),
        (['{"id": 1, "text": "a b c"}'], "line order 0"),
        (['{"text": "a b c", "stratum": 0}', '{"text": "d e f"}'], "every line or none"),
        (['{"text": "a b c", "stratum": -1}'], "integer >= 0"),
        (['{"text": "hello world"}', '{"text": "a"}'], r"in\.jsonl:2: 1 tokens"),
        ([], "no lines"),
    ],
)
def test_bad_input_is_refused_with_its_line(tmp_path: Path, lines: list[str], match: str) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tokenizer = train_bpe_tokenizer(make_texts(20), vocab_size=270)
    with pytest.raises(DatasetBuildError, match=match):
        build_dataset(jsonl, tmp_path / "ds", tokenizer)
    assert not (tmp_path / "ds").exists()


def test_tokenizer_loads_from_file_and_refuses_a_missing_one(tmp_path: Path) -> None:
    tokenizer = train_bpe_tokenizer(make_texts(20), vocab_size=270)
    tokenizer.save(str(tmp_path / "tok.json"))
    assert (
        load_tokenizer(tmp_path / "tok.json").encode("the fox").ids
        == tokenizer.encode("the fox").ids
    )
    with pytest.raises(DatasetBuildError, match="--vocab-size"):
        load_tokenizer(tmp_path / "nowhere")

"""Building datasets from JSONL with a BPE tokenizer trained offline: ids, strata, short rows."""

from __future__ import annotations

import json
import logging
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grace_workers.dataset import TokenDataset
from grace_workers.dataset_builder import (
    BPE_MIN_VOCAB,
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
        (['{"text": "a b c", "stratum": 0}', '{"text": "d e f"}'], "every row or none"),
        (['{"text": "a b c", "stratum": -1}'], r"in\.jsonl:1: 'stratum' must be an integer in"),
        (['{"text": "a b c", "stratum": true}'], "or a non-empty string, got True"),
        (['{"text": "a b c", "stratum": 0}', '{"text": "d e f", "stratum": "x"}'], "a name but"),
        (['{"text": "hello world"}', '{"text": "a"}'], r"in\.jsonl:2: 1 tokens.*--skip-short"),
        ([], "no rows"),
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


def test_every_sample_carries_its_text_and_row(tmp_path: Path) -> None:
    texts = make_texts(40, seed=2)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    ds = build_dataset(jsonl, tmp_path / "ds", train_bpe_tokenizer(texts, vocab_size=300))
    assert ds.text_path is not None
    lines = [json.loads(x) for x in ds.text_path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"id": i, "text": t} for i, t in enumerate(texts)]
    assert ds.sample_keys() is None
    assert ds.meta["source_format"] == "jsonl"
    no_text = build_dataset(jsonl, tmp_path / "bare", train_bpe_tokenizer(texts, 300),
                            write_text=False)  # fmt: skip
    assert no_text.text_path is None
    assert no_text.meta["text"] is None


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), string_keys=st.booleans())
def test_ids_follow_the_keys_whatever_the_row_order(
    tmp_path: Path, seed: int, string_keys: bool
) -> None:
    """Shuffling the rows and editing one text changes no sample id: ids are the keys' order."""
    rng = random.Random(seed)
    texts = make_texts(30, seed=seed % 1000)
    keys: list[object] = rng.sample(range(10_000), 30)
    if string_keys:
        keys = [f"doc-{k}" for k in keys]
    rows: list[dict[str, object]] = [
        {"key": k, "text": t} for k, t in zip(keys, texts, strict=True)
    ]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        root = Path(work)
        first = build_dataset(write_jsonl(root / "a.jsonl", rows), root / "a", tokenizer,
                              id_column="key")  # fmt: skip
        edited = [dict(r) for r in rows]
        rng.shuffle(edited)
        edited[0]["text"] = "an edited text of the same row."
        second = build_dataset(write_jsonl(root / "b.jsonl", edited), root / "b", tokenizer,
                               id_column="key")  # fmt: skip
        assert first.sample_keys() == second.sample_keys() == sorted(keys)  # type: ignore[type-var]
        by_key = {r["key"]: r["text"] for r in edited}
        assert second.text_path is not None
        for line in second.text_path.read_text(encoding="utf-8").splitlines():
            sample = json.loads(line)
            assert sample["text"] == by_key[second.sample_keys()[sample["id"]]]  # type: ignore[index]
        # source_lines maps each id back to the row it came from in the edited file
        for i in range(len(second)):
            assert edited[int(second.source_lines[i])]["key"] == second.sample_keys()[i]  # type: ignore[index]


def test_integer_keys_from_zero_are_the_sample_ids(tmp_path: Path) -> None:
    texts = make_texts(20, seed=3)
    order = list(range(20))
    random.Random(0).shuffle(order)
    rows: list[dict[str, object]] = [{"id": i, "text": texts[i]} for i in order]
    ds = build_dataset(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "ds",
                       train_bpe_tokenizer(texts, 300), id_column="id")  # fmt: skip
    assert ds.sample_keys() == list(range(20))
    reloaded = load_tokenizer(tmp_path / "ds")
    assert [reloaded.decode(ds.tokens(i).tolist()) for i in range(20)] == texts


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            [{"k": 1, "text": "a b c"}, {"k": 1, "text": "d e f"}],
            r"in\.jsonl:2: key 1 .*in\.jsonl:1; keys must be unique",
        ),
        ([{"k": 1, "text": "a b c"}, {"k": "x", "text": "d e f"}], "all integers or all strings"),
        ([{"k": 1, "text": "a b c"}, {"text": "d e f"}], r"in\.jsonl:2: no 'k'"),
        ([{"k": "", "text": "a b c"}], "non-empty string"),
    ],
)
def test_bad_keys_are_refused(tmp_path: Path, rows: list[dict[str, object]], match: str) -> None:
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(DatasetBuildError, match=match):
        build_dataset(jsonl, tmp_path / "ds", train_bpe_tokenizer(make_texts(20), 270),
                      id_column="k")  # fmt: skip
    assert not (tmp_path / "ds").exists()


def test_stratum_names_map_to_ids(tmp_path: Path) -> None:
    texts = make_texts(60, seed=4)
    sources = ["kjv", "code", "wordnet"]
    rows: list[dict[str, object]] = [
        {"text": t, "source": sources[i % 3]} for i, t in enumerate(texts)
    ]
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    ds = build_dataset(jsonl, tmp_path / "sorted", tokenizer, stratum_field="source")
    assert ds.stratum_names == {0: "code", 1: "kjv", 2: "wordnet"}
    assert ds.strata is not None
    assert [ds.stratum_names[int(s)] for s in ds.strata] == [r["source"] for r in rows]
    ordered = build_dataset(jsonl, tmp_path / "ordered", tokenizer, stratum_field="source",
                            stratum_order=["wordnet", "kjv", "code"])  # fmt: skip
    assert ordered.stratum_names == {0: "wordnet", 1: "kjv", 2: "code"}
    assert ordered.strata is not None
    assert [ordered.stratum_names[int(s)] for s in ordered.strata] == [r["source"] for r in rows]
    with pytest.raises(DatasetBuildError, match=r"'wordnet' is not in --stratum-order"):
        build_dataset(jsonl, tmp_path / "bad", tokenizer, stratum_field="source",
                      stratum_order=["kjv", "code"])  # fmt: skip
    with pytest.raises(DatasetBuildError, match="no row has a 'genre' field"):
        build_dataset(jsonl, tmp_path / "bad", tokenizer, stratum_field="genre",
                      require_strata=True)  # fmt: skip


def test_short_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    texts = make_texts(30, seed=5)
    rows: list[dict[str, object]] = [{"id": f"r{i:02d}", "text": t} for i, t in enumerate(texts)]
    for i in (3, 17):
        rows[i]["text"] = "a"  # one token
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    with pytest.raises(DatasetBuildError, match=r"in\.jsonl:4: 1 tokens"):
        build_dataset(jsonl, tmp_path / "ds", tokenizer, id_column="id")
    ds = build_dataset(jsonl, tmp_path / "ds", tokenizer, id_column="id", skip_short=True)
    assert len(ds) == 28
    assert ds.meta["skipped_short"] == 2
    assert ds.meta["source_rows"] == 30
    assert ds.sample_keys() == [f"r{i:02d}" for i in range(30) if i not in (3, 17)]
    np.testing.assert_array_equal(ds.source_lines, [i for i in range(30) if i not in (3, 17)])
    rows_only = build_dataset(jsonl, tmp_path / "rows", tokenizer, skip_short=True,
                              id_column="id", min_tokens=1)  # fmt: skip
    assert len(rows_only) == 30


def test_a_vocab_size_below_the_byte_alphabet_is_raised_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="grace_workers"):
        tokenizer = train_bpe_tokenizer(make_texts(50), vocab_size=5)
    assert tokenizer.get_vocab_size() == BPE_MIN_VOCAB == 257
    assert "vocab size 5 is below the 257" in caplog.text
    assert "raised to 257" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="grace_workers"):
        small = train_bpe_tokenizer(make_texts(5), vocab_size=5000)
    assert small.get_vocab_size() < 5000
    assert f"5000 asked, {small.get_vocab_size()} trained" in caplog.text

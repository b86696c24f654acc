"""The packaged MiniLM encoder, loaded offline: shapes, unit rows, and that it measures meaning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grace_lab.text_encoder import MINILM_DIM, MiniLMEncoder, jsonl_texts, project_fixed


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_minilm_gives_unit_rows_that_put_paraphrases_closest(encoder: MiniLMEncoder) -> None:
    texts = [
        "a domesticated carnivorous mammal that barks",
        "a dog is a tame animal that barks",
        "the rate of interest charged by a bank on a loan",
    ]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, MINILM_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3


def test_projection_is_the_jobs_seeded_map_with_unit_rows() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, MINILM_DIM)).astype(np.float32)
    a, b = project_fixed(vectors, 64, seed=7), project_fixed(vectors, 64, seed=7)
    assert a.shape == (5, 64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert not np.array_equal(a, project_fixed(vectors, 64, seed=8))


def test_jsonl_texts_follow_the_lines_and_name_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["one", "two"]))
    assert list(jsonl_texts(good)) == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no string field 'text'"):
        list(jsonl_texts(bad))

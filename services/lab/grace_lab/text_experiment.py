"""The demo's and the paper table's data: real Debian text, a BPE trained on it, tokenized sets.

Built once into a work folder and reused while the recipe (counts, vocabulary, seed) is the
same, so that repeated runs and every method of a benchmark see identical tokens.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_lab.debian_corpus import SOURCES, build_corpus
from grace_workers.dataset import TokenDataset
from grace_workers.dataset_builder import build_dataset, train_bpe_tokenizer

_RECIPE_FILE = "recipe.json"


def mixture_counts(documents: int) -> dict[str, int]:
    """Training documents per source: 60% WordNet, 25% KJV, 15% fortunes, imbalanced on
    purpose (see debian_corpus)."""
    bible, fortunes = documents * 25 // 100, documents * 15 // 100
    return {"wordnet": documents - bible - fortunes, "bible": bible, "fortunes": fortunes}


@dataclass(frozen=True, slots=True)
class TextRecipe:
    """How many documents of each source to train on and to hold out, and the tokenizer."""

    train_counts: Mapping[str, int] = field(
        default_factory=lambda: {"wordnet": 12_000, "bible": 5_000, "fortunes": 3_000}
    )
    eval_per_source: int = 500
    vocab_size: int = 4096
    max_tokens: int = 64
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "train_counts": dict(self.train_counts)}, sort_keys=True)


@dataclass(frozen=True, slots=True, eq=False)
class TextData:
    train: TokenDataset
    held_out: TokenDataset
    train_jsonl: Path
    stratum_names: tuple[str, ...]

    @property
    def train_strata(self) -> npt.NDArray[np.int32]:
        return _strata_of(self.train)

    @property
    def held_out_strata(self) -> npt.NDArray[np.int32]:
        return _strata_of(self.held_out)


def _strata_of(dataset: TokenDataset) -> npt.NDArray[np.int32]:
    if dataset.strata is None:
        raise ValueError(f"{dataset.path}: built without strata; rebuild with prepare_text_data")
    return np.asarray(dataset.strata, dtype=np.int32)


def prepare_text_data(work_dir: Path, recipe: TextRecipe | None = None) -> TextData:
    """Corpus JSONL, tokenizer and both datasets under work_dir; reused if the recipe matches."""
    recipe = recipe or TextRecipe()
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe_path = work_dir / _RECIPE_FILE
    train_dir, eval_dir = work_dir / "train", work_dir / "held_out"
    if (
        recipe_path.exists()
        and recipe_path.read_text() == recipe.to_json()
        and (train_dir / "meta.json").exists()
        and (eval_dir / "meta.json").exists()
    ):
        return _open(work_dir)
    recipe_path.unlink(missing_ok=True)
    for stale in (train_dir, eval_dir):
        shutil.rmtree(stale, ignore_errors=True)
    split = build_corpus(work_dir, recipe.train_counts, recipe.eval_per_source, seed=recipe.seed)
    texts = [json.loads(line)["text"] for line in split.train_path.open(encoding="utf-8")]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=recipe.vocab_size)
    build_dataset(split.train_path, train_dir, tokenizer, max_tokens=recipe.max_tokens)
    build_dataset(split.eval_path, eval_dir, tokenizer, max_tokens=recipe.max_tokens)
    recipe_path.write_text(recipe.to_json())  # written last: its presence means "complete"
    return _open(work_dir)


def _open(work_dir: Path) -> TextData:
    return TextData(
        train=TokenDataset.open(work_dir / "train"),
        held_out=TokenDataset.open(work_dir / "held_out"),
        train_jsonl=work_dir / "train.jsonl",
        stratum_names=SOURCES,
    )

"""The fine-tuning regime's data: a general corpus to pretrain on, and the instruction pairs.

Built once into a work folder and reused while the recipe is the same:
- `tokenizer.json`: a byte-level BPE trained on the general corpus only (KJV verses and
  fortunes), the base model's tokenizer, which the task's text never shaped;
- `pretrain/`: the general corpus, tokenized, to pretrain the base model on;
- `train/`, `held_out/`: the pairs, each sample the prompt's tokens then the response's, with
  `target_starts` at the response, so that training and the workers' scoring count the
  response tokens only; `train.jsonl` / `held_out.jsonl` hold the pairs as text (the train file
  is the job's text source in the dashboard).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_lab.debian_corpus import read_fortunes, read_kjv_verses
from grace_lab.definitions import (
    PARTS_OF_SPEECH,
    Pair,
    make_definition_task,
    read_pairs,
    stratum_ids,
    write_pairs,
)
from grace_workers.dataset import TokenDataset, write_dataset
from grace_workers.dataset_builder import load_tokenizer, train_bpe_tokenizer

_RECIPE_FILE = "recipe.json"
_NAMES_FILE = "strata.json"


@dataclass(frozen=True, slots=True)
class FinetuneRecipe:
    """What the data is made of. `jsonl`/`held_out_jsonl` replace the WordNet task."""

    train_synsets: int = 8000
    held_out_pairs: int = 1200
    held_out_floor: int = 100  # at least this many held-out pairs per stratum
    label_noise: float = 0.2
    pos_weights: tuple[float, ...] | None = None
    pretrain_documents: int = 40_000
    vocab_size: int = 4096
    max_tokens: int = 64
    seed: int = 0
    jsonl: str | None = None
    held_out_jsonl: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True, slots=True, eq=False)
class FinetuneData:
    pretrain: TokenDataset
    train: TokenDataset
    held_out: TokenDataset
    train_jsonl: Path
    stratum_names: tuple[str, ...]
    noisy: npt.NDArray[np.bool_]  # (N,) planted label noise, for the report only
    groups: npt.NDArray[np.int64]  # (N,) the synset (or group) of each training pair

    @property
    def train_strata(self) -> npt.NDArray[np.int32]:
        return np.asarray(self.train.strata, dtype=np.int32)

    @property
    def held_out_strata(self) -> npt.NDArray[np.int32]:
        return np.asarray(self.held_out.strata, dtype=np.int32)

    @property
    def stratum_shares(self) -> npt.NDArray[np.float64]:
        """Each stratum's share of the training pairs: the weights of the overall loss."""
        counts = np.bincount(self.train_strata, minlength=len(self.stratum_names))
        shares: npt.NDArray[np.float64] = counts / max(counts.sum(), 1)
        return shares


def prepare_finetune_data(work_dir: Path, recipe: FinetuneRecipe) -> FinetuneData:
    """Every file under work_dir; reused when the recipe matches the one they were made with."""
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe_path = work_dir / _RECIPE_FILE
    if recipe_path.exists() and recipe_path.read_text() == recipe.to_json():
        return _open(work_dir)
    recipe_path.unlink(missing_ok=True)
    for stale in ("pretrain", "train", "held_out"):
        shutil.rmtree(work_dir / stale, ignore_errors=True)
    general = _general_corpus(recipe.pretrain_documents, recipe.seed)
    tokenizer = train_bpe_tokenizer(general, vocab_size=recipe.vocab_size)
    (work_dir / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
    samples = [
        np.asarray(e.ids, np.int64)[: recipe.max_tokens] for e in tokenizer.encode_batch(general)
    ]
    samples = [s for s in samples if s.size >= 2]
    write_dataset(work_dir / "pretrain", samples, vocab_size=tokenizer.get_vocab_size())
    train, held_out, names = _pairs(recipe)
    write_pairs(work_dir / "train.jsonl", train)
    write_pairs(work_dir / "held_out.jsonl", held_out)
    _write_text_source(work_dir / "train.text.jsonl", train)
    for name, pairs in (("train", train), ("held_out", held_out)):
        _write_pair_dataset(work_dir / name, pairs, tokenizer, recipe.max_tokens)
    (work_dir / _NAMES_FILE).write_text(json.dumps(list(names)))
    recipe_path.write_text(recipe.to_json())  # written last: its presence means "complete"
    return _open(work_dir)


def _pairs(recipe: FinetuneRecipe) -> tuple[list[Pair], list[Pair], tuple[str, ...]]:
    if recipe.jsonl is not None:
        if recipe.held_out_jsonl is None:
            raise ValueError("--jsonl needs --held-out-jsonl: the pairs to measure on")
        train = list(read_pairs(Path(recipe.jsonl)))
        held = list(read_pairs(Path(recipe.held_out_jsonl)))
        both, names = stratum_ids(train + held)
        train, held = both[: len(train)], both[len(train) :]
        if recipe.label_noise > 0:
            train = _add_noise(train, recipe.label_noise, recipe.seed)
        return train, held, names
    split = make_definition_task(
        recipe.train_synsets,
        _held_out_total(recipe),
        label_noise=recipe.label_noise,
        seed=recipe.seed,
        pos_weights=recipe.pos_weights,
    )
    return split.train, _held_out_with_floor(split.held_out, recipe), PARTS_OF_SPEECH


def _held_out_total(recipe: FinetuneRecipe) -> int:
    # Drawn in the task's proportions, then topped up per stratum from a larger draw.
    return recipe.held_out_pairs + len(PARTS_OF_SPEECH) * recipe.held_out_floor * 8


def _held_out_with_floor(pool: list[Pair], recipe: FinetuneRecipe) -> list[Pair]:
    """The first `held_out_pairs` of the (random) pool, then more of any stratum below the
    floor. The overall loss weighs strata by their training share, so the top-up only makes
    the small strata's own losses less noisy."""
    chosen = pool[: recipe.held_out_pairs]
    for stratum in range(len(PARTS_OF_SPEECH)):
        have = sum(1 for p in chosen if p.stratum == stratum)
        extra = [p for p in pool[recipe.held_out_pairs :] if p.stratum == stratum]
        chosen += extra[: max(0, recipe.held_out_floor - have)]
    return chosen


def _add_noise(pairs: list[Pair], share: float, seed: int) -> list[Pair]:
    """--label-noise on a user's pairs: that share gets the response of a random other row."""
    rng = np.random.default_rng([seed, 0x401])
    out = list(pairs)
    if len(pairs) < 2:  # no other row to take a response from
        return out
    for i in np.flatnonzero(rng.random(len(pairs)) < share).tolist():
        j = int(rng.integers(len(pairs) - 1))
        j += int(j >= i)
        out[i] = Pair(out[i].prompt, pairs[j].response, out[i].stratum, out[i].group, True)
    return out


def _general_corpus(documents: int, seed: int) -> list[str]:
    """KJV verses and fortunes, half each (as far as each goes), in a seeded order."""
    rng = np.random.default_rng([seed, 0x6E])
    kjv, fortunes = list(read_kjv_verses()), list(read_fortunes())
    half = documents // 2
    picked = [kjv[i] for i in rng.permutation(len(kjv))[:half]]
    picked += [fortunes[i] for i in rng.permutation(len(fortunes))[: documents - half]]
    return [picked[i] for i in rng.permutation(len(picked))]


def _write_pair_dataset(out: Path, pairs: list[Pair], tokenizer: object, max_tokens: int) -> None:
    prompts = tokenizer.encode_batch([p.prompt for p in pairs])  # type: ignore[attr-defined]
    responses = tokenizer.encode_batch([" " + p.response for p in pairs])  # type: ignore[attr-defined]
    samples, starts = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        head = np.asarray(prompt.ids, np.int64)[: max_tokens - 1]
        tokens = np.concatenate([head, np.asarray(response.ids, np.int64)])[:max_tokens]
        samples.append(tokens)
        starts.append(max(1, head.size))
    groups = {g: i for i, g in enumerate(dict.fromkeys(p.group for p in pairs))}
    write_dataset(
        out,
        samples,
        vocab_size=tokenizer.get_vocab_size(),  # type: ignore[attr-defined]
        strata=np.array([int(p.stratum) for p in pairs]),
        target_starts=np.array(starts),
        tokenizer_json=tokenizer.to_str(),  # type: ignore[attr-defined]
        extra_meta={
            "noisy": [i for i, p in enumerate(pairs) if p.noisy],
            "groups": [groups[p.group] for p in pairs],
        },
    )


def _write_text_source(path: Path, pairs: list[Pair]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for p in pairs:
            text = f"{p.prompt} {p.response}"
            fh.write(json.dumps({"text": text, "stratum": int(p.stratum)}) + "\n")


def _open(work_dir: Path) -> FinetuneData:
    train = TokenDataset.open(work_dir / "train")
    noisy = np.zeros(len(train), dtype=np.bool_)
    noisy[np.asarray(train.meta.get("noisy", []), dtype=np.int64)] = True
    return FinetuneData(
        pretrain=TokenDataset.open(work_dir / "pretrain"),
        train=train,
        held_out=TokenDataset.open(work_dir / "held_out"),
        train_jsonl=work_dir / "train.text.jsonl",
        stratum_names=tuple(json.loads((work_dir / _NAMES_FILE).read_text())),
        noisy=noisy,
        groups=np.asarray(train.meta.get("groups", range(len(train))), dtype=np.int64),
    )


def load_base_tokenizer(work_dir: Path) -> object:
    return load_tokenizer(work_dir / "tokenizer.json")

"""The fine-tuning task: define a word, from WordNet 3.0 (Debian's `wordnet-base`).

Each pair is a prompt `define <lemma> (<part of speech>):` and a response, the synset's
definition (its gloss without the example sentences). The strata are the parts of speech, which
are naturally imbalanced (about 70% nouns, 15% adjectives, 12% verbs, 3% adverbs). Synonyms give
natural redundancy: every lemma of a synset makes a pair with the same definition.

The data problems are fixed here, not tuned to any method: a share of the training pairs
(20% by default) gets the definition of a random other synset (label noise), and held-out pairs
are clean and come from synsets that are not in training. A user's own pairs come in as JSONL
rows `{"prompt", "response", "stratum"}` (`read_pairs`) and are used as given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grace_lab.debian_corpus import WORDNET_DIR, CorpusSourceMissingError

# WordNet's synset types: n, v, a (adjective), s (satellite adjective), r (adverb).
PARTS_OF_SPEECH: tuple[str, ...] = ("noun", "verb", "adjective", "adverb")
_SS_TYPE = {"n": 0, "v": 1, "a": 2, "s": 2, "r": 3}
_DATA_FILES = ("noun", "verb", "adj", "adv")
_MARKER = re.compile(r"\([a-z]+\)$")  # adjective position markers: lemma(a), lemma(p)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Synset:
    key: str  # "<offset><type>", unique over the four data files
    pos: int  # index into PARTS_OF_SPEECH
    lemmas: tuple[str, ...]
    definition: str


@dataclass(frozen=True, slots=True)
class Pair:
    """One instruction pair. `group` ties the pairs of one synset (or one user row group);
    `noisy` marks a planted wrong response: for the report only, never shown to a method."""

    prompt: str
    response: str
    stratum: int
    group: str
    noisy: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "prompt": self.prompt,
                "response": self.response,
                "stratum": self.stratum,
                "group": self.group,
                "noisy": self.noisy,
            },
            ensure_ascii=False,
        )


def read_synsets(root: Path = WORDNET_DIR) -> list[Synset]:
    """Every synset of WordNet with at least one lemma and a non-empty definition."""
    files = [root / f"data.{name}" for name in _DATA_FILES]
    if not all(f.exists() for f in files):
        raise CorpusSourceMissingError("wordnet")
    synsets: list[Synset] = []
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # the licence header
                    continue
                found = _parse_line(line)
                if found is not None:
                    synsets.append(found)
    return synsets


def _parse_line(line: str) -> Synset | None:
    head, sep, gloss = line.partition(" | ")
    if not sep:
        return None
    fields = head.split()
    offset, ss_type, count = fields[0], fields[2], int(fields[3], 16)
    words = fields[4 : 4 + 2 * count : 2]
    lemmas = tuple(dict.fromkeys(_MARKER.sub("", w).replace("_", " ") for w in words))
    definition = _definition(gloss)
    if not lemmas or not definition or ss_type not in _SS_TYPE:
        return None
    return Synset(f"{offset}{ss_type}", _SS_TYPE[ss_type], lemmas, definition)


def _definition(gloss: str) -> str:
    """The gloss without its example sentences (`; "..."`)."""
    text = _SPACE.sub(" ", gloss).strip()
    cut = text.find('; "')
    if cut > 0:
        text = text[:cut]
    elif text.startswith('"'):
        return ""  # examples only, no definition
    return text.strip().rstrip(";").strip()


def prompt_for(lemma: str, pos: int) -> str:
    return f"define {lemma} ({PARTS_OF_SPEECH[pos]}):"


@dataclass(frozen=True, slots=True)
class TaskSplit:
    train: list[Pair]
    held_out: list[Pair]


def make_definition_task(
    train_synsets: int,
    held_out_pairs: int,
    *,
    label_noise: float = 0.2,
    seed: int = 0,
    root: Path = WORDNET_DIR,
    pos_weights: Sequence[float] | None = None,
) -> TaskSplit:
    """`train_synsets` synsets become training pairs (every lemma one pair); `held_out_pairs`
    clean pairs (one lemma each) come from other synsets.

    label_noise: the share of training pairs whose response is the definition of a random other
        synset (any part of speech), drawn with `seed`.
    pos_weights: None draws synsets in WordNet's own proportions; otherwise a weight per part of
        speech (the robustness grid's "another stratum mix"), applied to training and held out.
    """
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise: must be in [0, 1), got {label_noise}")
    synsets = read_synsets(root)
    rng = np.random.default_rng([seed, 0xDEF])
    order = _draw_order(synsets, rng, pos_weights)
    if train_synsets + held_out_pairs > order.size:
        raise ValueError(
            f"train_synsets + held_out_pairs: {train_synsets} + {held_out_pairs} exceeds the "
            f"{order.size} synsets available"
        )
    held = [synsets[i] for i in order[:held_out_pairs]]
    chosen = [synsets[i] for i in order[held_out_pairs : held_out_pairs + train_synsets]]
    held_out = [
        Pair(
            prompt_for(s.lemmas[int(rng.integers(len(s.lemmas)))], s.pos),
            s.definition,
            s.pos,
            s.key,
        )
        for s in held
    ]
    train = [
        Pair(prompt_for(lemma, s.pos), s.definition, s.pos, s.key)
        for s in chosen
        for lemma in s.lemmas
    ]
    train = [train[i] for i in rng.permutation(len(train))]
    noisy = rng.random(len(train)) < label_noise
    for i in np.flatnonzero(noisy):
        other = synsets[int(rng.integers(len(synsets)))]
        while other.key == train[i].group:
            other = synsets[int(rng.integers(len(synsets)))]
        p = train[i]
        train[i] = Pair(p.prompt, other.definition, p.stratum, p.group, noisy=True)
    return TaskSplit(train, held_out)


def _draw_order(
    synsets: list[Synset], rng: np.random.Generator, pos_weights: Sequence[float] | None
) -> np.ndarray:
    """A random order of synset indices; with weights, parts of speech are drawn in them."""
    if pos_weights is None:
        return rng.permutation(len(synsets))
    weights = np.asarray(pos_weights, dtype=np.float64)
    if weights.shape != (len(PARTS_OF_SPEECH),) or (weights <= 0).any():
        raise ValueError(f"pos_weights: one positive weight per part of speech {PARTS_OF_SPEECH}")
    pos = np.array([s.pos for s in synsets])
    by_pos = [rng.permutation(np.flatnonzero(pos == p)) for p in range(len(PARTS_OF_SPEECH))]
    # Interleave: each next synset's part of speech is drawn by the weights, until one runs out.
    taken = [0] * len(by_pos)
    share = weights / weights.sum()
    out: list[int] = []
    for p in rng.choice(len(by_pos), size=len(synsets), p=share):
        if taken[p] >= by_pos[p].size:
            break
        out.append(int(by_pos[p][taken[p]]))
        taken[p] += 1
    return np.asarray(out, dtype=np.int64)


def write_pairs(path: Path, pairs: Sequence[Pair]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(pair.to_json() + "\n")
    tmp.replace(path)


def read_pairs(path: Path) -> Iterator[Pair]:
    """Rows `{"prompt": str, "response": str, "stratum": int | str}` of a JSONL file; a string
    stratum is kept as given and mapped to an id by the caller (`stratum_ids`)."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            row = json.loads(line)
            prompt, response = row.get("prompt"), row.get("response")
            if not isinstance(prompt, str) or not isinstance(response, str) or not response:
                raise ValueError(
                    f"{path}:{number}: each row needs a string `prompt` and a non-empty string "
                    "`response`"
                )
            stratum = row.get("stratum", 0)
            group = str(row.get("group", f"{path.name}:{number}"))
            yield Pair(prompt, response, stratum, group, bool(row.get("noisy", False)))


def stratum_ids(pairs: Sequence[Pair]) -> tuple[list[Pair], tuple[str, ...]]:
    """Pairs with integer strata, and each stratum's name: strings map to ids in sorted order,
    integers keep their value and are named by it."""
    raw = {p.stratum for p in pairs}
    if all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw):
        top = max(raw, default=0)
        return list(pairs), tuple(str(s) for s in range(int(top) + 1))
    names = tuple(sorted(str(s) for s in raw))
    index = {name: i for i, name in enumerate(names)}
    mapped = [Pair(p.prompt, p.response, index[str(p.stratum)], p.group, p.noisy) for p in pairs]
    return mapped, names

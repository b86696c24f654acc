"""Real English text that ships with Debian, as one JSONL corpus with a source tag per document.

Sources (all offline, permissive):
- `wordnet`: WordNet 3.0 glosses (package `wordnet-base`, WordNet 3.0 licence, BSD-like),
  one definition per synset: short, encyclopaedic, about 117k documents.
- `bible`: King James Version verses (package `bible-kjv`; the text is public domain),
  31,102 verses: archaic, repetitive, formulaic.
- `fortunes`: fortune-mod cookies (package `fortunes`, BSD licence), about 30k quotes, jokes
  and poems: varied and rare.

The mixture is imbalanced on purpose: a coreset that only chases the large source loses the
small one, and per-source perplexity shows it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
SOURCES: tuple[str, ...] = ("wordnet", "bible", "fortunes")
PACKAGES: Mapping[str, str] = {
    "wordnet": "wordnet-base",
    "bible": "bible-kjv",
    "fortunes": "fortunes",
}
_VERSE_REF = re.compile(r"^\S+\d+:\d+\s+")
_SPACE = re.compile(r"\s+")


class CorpusSourceMissingError(RuntimeError):
    """A Debian text package is not installed; the message says which one to install."""

    def __init__(self, source: str) -> None:
        package = PACKAGES[source]
        super().__init__(
            f"the {source!r} text source needs the Debian package {package!r}: "
            f"run `apt-get install -y --no-install-recommends {package}` (or `make install`)"
        )


def read_wordnet_glosses(root: Path = WORDNET_DIR) -> Iterator[str]:
    """One gloss per synset line (the text after ' | ' in data.noun/verb/adj/adv)."""
    files = [root / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.exists() for f in files):
        raise CorpusSourceMissingError("wordnet")
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # the licence header lines
                    continue
                _, sep, gloss = line.partition(" | ")
                if sep and (text := _clean(gloss)):
                    yield text


def read_kjv_verses() -> Iterator[str]:
    """Every verse of the KJV, Genesis to Revelation, without its reference."""
    binary = shutil.which("bible") or "/usr/bin/bible"
    if not Path(binary).exists():
        raise CorpusSourceMissingError("bible")
    out = subprocess.run(
        [binary, "-f", "Ge1:1-Re22:21"], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if text := _clean(_VERSE_REF.sub("", line)):
            yield text


def read_fortunes(root: Path = FORTUNES_DIR) -> Iterator[str]:
    """Each cookie of the UTF-8 fortune files, whitespace collapsed."""
    files = sorted(root.glob("*.u8"))
    if not files:
        raise CorpusSourceMissingError("fortunes")
    for path in files:
        for cookie in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            if text := _clean(cookie.strip("%\n")):
                yield text


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


READERS = {"wordnet": read_wordnet_glosses, "bible": read_kjv_verses, "fortunes": read_fortunes}


@dataclass(frozen=True, slots=True)
class CorpusSplit:
    train_path: Path
    eval_path: Path
    train_counts: dict[str, int]
    eval_counts: dict[str, int]


def build_corpus(
    out_dir: Path,
    train_counts: Mapping[str, int],
    eval_per_source: int,
    seed: int = 0,
    min_chars: int = 20,
) -> CorpusSplit:
    """Sample disjoint train and held-out documents per source into two JSONL files.

    Each line is {"id": int, "text": str, "source": str, "stratum": int}; ids are dense from 0
    in file order, stratum is the source's position in SOURCES.
    """
    unknown = sorted(set(train_counts) - set(SOURCES))
    if unknown:
        raise ValueError(f"train_counts: unknown sources {unknown}; use {list(SOURCES)}")
    rng = np.random.default_rng(seed)
    train: list[tuple[str, str]] = []
    held_out: list[tuple[str, str]] = []
    for source in SOURCES:
        want = train_counts.get(source, 0)
        if want == 0:
            continue
        docs = sorted({d for d in READERS[source]() if len(d) >= min_chars})
        if want + eval_per_source > len(docs):
            raise ValueError(
                f"train_counts[{source!r}]: {want} + {eval_per_source} held out exceeds the "
                f"{len(docs)} documents available"
            )
        order = rng.permutation(len(docs))
        train += [(docs[i], source) for i in order[:want]]
        held_out += [(docs[i], source) for i in order[want : want + eval_per_source]]
    train = [train[i] for i in rng.permutation(len(train))]  # interleave sources
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, eval_path = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    _write_jsonl(train_path, train)
    _write_jsonl(eval_path, held_out)
    return CorpusSplit(
        train_path,
        eval_path,
        {s: sum(1 for _, src in train if src == s) for s in SOURCES},
        {s: sum(1 for _, src in held_out if src == s) for s in SOURCES},
    )


def _write_jsonl(path: Path, docs: list[tuple[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for i, (text, source) in enumerate(docs):
            row = {"id": i, "text": text, "source": source, "stratum": SOURCES.index(source)}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)

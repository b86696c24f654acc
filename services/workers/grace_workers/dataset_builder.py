"""Building a tokenized dataset from JSONL text: a BPE tokenizer trained offline, or a local one.

Each JSONL line is an object with a text field (default "text") and optionally an integer
stratum field (default "stratum"). Sample ids are the line order, so that the JSONL file itself
can serve as the job's `text_source`; an "id" field, if present, must agree with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_workers.dataset import TokenDataset, write_dataset

_ENCODE_BATCH = 2048


class DatasetBuildError(ValueError):
    """The JSONL input cannot be built into a dataset; the message names the line and the fix."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    line: int  # 0-based line number in the JSONL file
    text: str
    stratum: int | None


def read_jsonl_rows(
    path: str | os.PathLike[str], *, text_field: str = "text", stratum_field: str = "stratum"
) -> Iterator[SourceRow]:
    """Rows of a JSONL file, checked: every line an object with a string `text_field`."""
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetBuildError(f"{path}:{line_no + 1}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise DatasetBuildError(
                    f"{path}:{line_no + 1}: expected an object with a string {text_field!r} "
                    "field; pass --text-field to name another"
                )
            if "id" in row and row["id"] != line_no:
                raise DatasetBuildError(
                    f"{path}:{line_no + 1}: id {row['id']!r} is not the line order {line_no}; "
                    "sample ids are line numbers from 0, so sort or renumber the file"
                )
            stratum = row.get(stratum_field)
            if stratum is not None and (not isinstance(stratum, int) or stratum < 0):
                raise DatasetBuildError(
                    f"{path}:{line_no + 1}: {stratum_field!r} must be an integer >= 0, "
                    f"got {stratum!r}"
                )
            yield SourceRow(line_no, row[text_field], stratum)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts` (seconds for ~100k lines).

    Byte level: every string encodes (no unknown token), and decoding restores the text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """A tokenizer from a tokenizer.json file or a local Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer

    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise DatasetBuildError(
            f"{path}: no tokenizer.json there; save one with tokenizer.save(path) or pass "
            "--vocab-size to train a BPE tokenizer on the input"
        )
    return Tokenizer.from_file(str(file))


def build_dataset(
    jsonl: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tokenizer: Any,
    *,
    text_field: str = "text",
    stratum_field: str = "stratum",
    min_tokens: int = 2,
    max_tokens: int | None = None,
    overwrite: bool = False,
) -> TokenDataset:
    """Tokenize every line of `jsonl` into the dataset directory `out`.

    A sample shorter than `min_tokens` is refused with its line number (scoring needs at least
    one predicted token, and dropping it would shift every later id); `max_tokens` truncates.
    """
    if min_tokens < 1:
        raise DatasetBuildError(f"min_tokens: must be >= 1, got {min_tokens}")
    rows = list(read_jsonl_rows(jsonl, text_field=text_field, stratum_field=stratum_field))
    if not rows:
        raise DatasetBuildError(f"{jsonl}: no lines; a dataset needs at least one sample")
    with_stratum = [r.stratum is not None for r in rows]
    if any(with_stratum) and not all(with_stratum):
        first = rows[with_stratum.index(False)].line + 1
        raise DatasetBuildError(
            f"{jsonl}:{first}: no {stratum_field!r} while other lines have one; "
            "tag every line or none"
        )
    samples: list[npt.NDArray[np.int64]] = []
    for start in range(0, len(rows), _ENCODE_BATCH):
        chunk = rows[start : start + _ENCODE_BATCH]
        for row, enc in zip(chunk, tokenizer.encode_batch([r.text for r in chunk]), strict=True):
            ids = np.asarray(enc.ids, dtype=np.int64)[:max_tokens]
            if ids.size < min_tokens:
                raise DatasetBuildError(
                    f"{jsonl}:{row.line + 1}: {ids.size} tokens, fewer than min_tokens="
                    f"{min_tokens}; remove or lengthen that line"
                )
            samples.append(ids)
    return write_dataset(
        out,
        samples,
        vocab_size=int(tokenizer.get_vocab_size()),
        source_lines=[r.line for r in rows],
        strata=np.array([r.stratum or 0 for r in rows]) if all(with_stratum) else None,
        tokenizer_json=tokenizer.to_str(),
        extra_meta={
            "source": str(Path(jsonl).resolve()),
            "text_field": text_field,
            "min_tokens": min_tokens,
            "max_tokens": max_tokens,
        },
        overwrite=overwrite,
    )

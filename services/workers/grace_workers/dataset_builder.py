"""Building a tokenized dataset from JSONL, Parquet or a Hugging Face dataset folder.

The rows come from `grace_workers.sources`; the tokenizer is a BPE trained offline here, a
`tokenizer.json`, or a local directory loaded as `transformers.AutoTokenizer` loads it.

Sample ids (docs/dataset-format.md): without an id column they are the input's row order, so
that a JSONL file can serve as the job's `text_source` as it is. With `id_column`, each row's
key (an integer or a string) decides its id: ids are the keys in sorted order, so reordering,
re-exporting or editing the text of the input changes no id. Either way the dataset records
the input row of every id (`source_lines.npy`) and writes `text.jsonl`, whose line i is sample
i's text, as the job's `text_source`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_proto.usage import MissingExtraError, pip_command_for
from grace_workers.dataset import TokenDataset, write_dataset
from grace_workers.sources import (
    DatasetBuildError,
    Source,
    SourceRow,
    Tag,
    read_jsonl_rows,
)

__all__ = [
    "BPE_MIN_VOCAB",
    "DatasetBuildError",
    "SourceRow",
    "build_dataset",
    "load_tokenizer",
    "read_jsonl_rows",
    "train_bpe_tokenizer",
]

log = logging.getLogger("grace_workers.dataset_builder")
_ENCODE_BATCH = 2048
BPE_SPECIAL_TOKENS = ("<|endoftext|>",)
BPE_MIN_VOCAB = 256 + len(BPE_SPECIAL_TOKENS)  # every byte, plus the special tokens
_SHOWN_SKIPS = 3  # places of skipped rows named in the log


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts` (seconds for ~100k lines).

    Byte level: every string encodes (no unknown token), and decoding restores the text. A
    `vocab_size` below BPE_MIN_VOCAB (256 bytes + the special token) cannot be honoured and is
    raised to it; a corpus too small for the merges asked for gives a smaller vocabulary. Both
    are logged at WARNING, never done silently.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < BPE_MIN_VOCAB:
        log.warning(
            "vocab size %d is below the %d a byte-level BPE needs (256 bytes + %s); raised to %d",
            vocab_size,
            BPE_MIN_VOCAB,
            ", ".join(BPE_SPECIAL_TOKENS),
            BPE_MIN_VOCAB,
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(BPE_SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    got = tokenizer.get_vocab_size()
    if vocab_size >= BPE_MIN_VOCAB and got < vocab_size:
        log.warning(
            "vocab size %d asked, %d trained: the input has no more pairs seen twice to merge",
            vocab_size,
            got,
        )
    return tokenizer


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """A tokenizer from a tokenizer.json file or a local Hugging Face tokenizer directory.

    A directory with a tokenizer_config.json (what `save_pretrained` writes: tokenizer.json, or
    vocab.json + merges.txt, or a sentencepiece model) is loaded with
    `transformers.AutoTokenizer` from local files only, as a model's training would load it; a
    directory holding only a tokenizer.json (a grace dataset, say) with `tokenizers`.
    """
    p = Path(path)
    if p.is_dir() and (p / "tokenizer_config.json").is_file():
        return _load_auto_tokenizer(p)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise DatasetBuildError(
            f"{path}: no tokenizer.json or tokenizer_config.json there; pass a tokenizer file, "
            "a directory saved with save_pretrained, or --vocab-size to train a BPE tokenizer "
            "on the input"
        )
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises its own Exception subclass for a bad file
        raise DatasetBuildError(f"{file}: not a tokenizers file ({exc})") from exc


def _load_auto_tokenizer(path: Path) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingExtraError(
            "transformers",
            pip_command_for("transformers") or "pip install transformers",
            f"the tokenizer directory {path}",
        ) from exc
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DatasetBuildError(
            f"{path}: AutoTokenizer cannot load it ({exc}); save it with "
            "tokenizer.save_pretrained(path)"
        ) from exc


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids per text, from a `tokenizers.Tokenizer` or a transformers tokenizer."""
    if hasattr(tokenizer, "encode_batch"):
        return [enc.ids for enc in tokenizer.encode_batch(texts)]
    # verbose=False: we truncate ourselves, so "longer than the model's maximum" is no news.
    ids: list[list[int]] = tokenizer(texts, verbose=False)["input_ids"]
    return ids


def tokenizer_vocab_size(tokenizer: Any) -> int:
    if hasattr(tokenizer, "get_vocab_size"):
        return int(tokenizer.get_vocab_size())
    return len(tokenizer)


def tokenizer_json(tokenizer: Any) -> str | None:
    """The tokenizer as a tokenizer.json string (None for a slow-only transformers one)."""
    if hasattr(tokenizer, "to_str"):
        return str(tokenizer.to_str())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return None if backend is None else str(backend.to_str())


def build_dataset(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tokenizer: Any,
    *,
    format: str | None = None,
    text_field: str = "text",
    stratum_field: str = "stratum",
    require_strata: bool = False,
    stratum_order: Sequence[str] | None = None,
    id_column: str | None = None,
    min_tokens: int = 2,
    max_tokens: int | None = None,
    skip_short: bool = False,
    write_text: bool = True,
    overwrite: bool = False,
) -> TokenDataset:
    """Tokenize every row of `source` (JSONL, Parquet, or a save_to_disk folder) into `out`.

    A row shorter than `min_tokens` after tokenizing (scoring needs at least one predicted
    token) is refused with its place, or with `skip_short` left out and counted in the meta
    (`skipped_short`). `max_tokens` truncates. String strata become ids in `stratum_order`
    (default: sorted names), recorded as `stratum_names`.
    """
    if min_tokens < 1:
        raise DatasetBuildError(f"min_tokens: must be >= 1, got {min_tokens}")
    src = Source.open(source, format)
    rows = list(src.rows(text_field=text_field, stratum_field=stratum_field, id_column=id_column))
    if not rows:
        raise DatasetBuildError(f"{src.path}: no rows; a dataset needs at least one sample")
    samples: list[npt.NDArray[np.int64]] = []
    kept: list[SourceRow] = []
    skipped: list[int] = []
    for start in range(0, len(rows), _ENCODE_BATCH):
        chunk = rows[start : start + _ENCODE_BATCH]
        for row, ids in zip(chunk, encode_texts(tokenizer, [r.text for r in chunk]), strict=True):
            tokens = np.asarray(ids, dtype=np.int64)[:max_tokens]
            if tokens.size >= min_tokens:
                samples.append(tokens)
                kept.append(row)
            elif skip_short:
                skipped.append(row.line)
            else:
                raise DatasetBuildError(
                    f"{src.where(row.line)}: {tokens.size} tokens, fewer than min_tokens="
                    f"{min_tokens}; remove or lengthen that row, or pass --skip-short to leave "
                    "such rows out"
                )
    if skipped:
        shown = ", ".join(src.where(r) for r in skipped[:_SHOWN_SKIPS])
        log.warning(
            "skipped %d of %d rows with fewer than %d tokens (%s%s)",
            len(skipped),
            len(rows),
            min_tokens,
            shown,
            ", ..." if len(skipped) > _SHOWN_SKIPS else "",
        )
    if not kept:
        raise DatasetBuildError(
            f"{src.path}: every row has fewer than min_tokens={min_tokens} tokens; lower "
            "--min-tokens or check --text-field"
        )
    order, keys = _order_by_key(src, kept, id_column)
    strata, names = _strata_ids(src, kept, stratum_field, require_strata, stratum_order)
    return write_dataset(
        out,
        [samples[i] for i in order],
        vocab_size=tokenizer_vocab_size(tokenizer),
        source_lines=[kept[i].line for i in order],
        strata=None if strata is None else strata[order],
        stratum_names=names,
        sample_keys=None if keys is None else [keys[i] for i in order],
        texts=[kept[i].text for i in order] if write_text else None,
        tokenizer_json=tokenizer_json(tokenizer),
        extra_meta={
            "source": str(src.path.resolve()),
            "source_format": src.format,
            "text_field": text_field,
            "stratum_field": stratum_field if strata is not None else None,
            "id_column": id_column,
            "min_tokens": min_tokens,
            "max_tokens": max_tokens,
            "source_rows": len(rows),
            "skipped_short": len(skipped),
        },
        overwrite=overwrite,
    )


def _order_by_key(
    src: Source, rows: list[SourceRow], id_column: str | None
) -> tuple[list[int], list[Tag] | None]:
    """Which kept row becomes sample 0, 1, ...: row order, or the sorted order of the keys."""
    if id_column is None:
        return list(range(len(rows))), None
    keys: list[Tag] = [r.key for r in rows if r.key is not None]  # the readers require one
    first_at: dict[Tag, int] = {}
    for row, key in zip(rows, keys, strict=True):
        if not isinstance(key, type(keys[0])):
            raise DatasetBuildError(
                f"{src.where(row.line)}: key {key!r} of {id_column!r} is not of the same kind "
                f"as the first row's {keys[0]!r}; keys must be all integers or all strings"
            )
        if key in first_at:
            raise DatasetBuildError(
                f"{src.where(row.line)}: key {key!r} of {id_column!r} is also the key of "
                f"{src.where(first_at[key])}; keys must be unique"
            )
        first_at[key] = row.line
    # Integers sort as numbers, strings by code point; one kind only, checked above.
    order = sorted(
        range(len(keys)),
        key=lambda i: (
            keys[i] if isinstance(keys[i], int) else 0,
            str(keys[i]) if isinstance(keys[i], str) else "",
        ),
    )
    return order, keys


def _strata_ids(
    src: Source,
    rows: list[SourceRow],
    field: str,
    required: bool,
    order: Sequence[str] | None,
) -> tuple[npt.NDArray[np.int64] | None, dict[int, str] | None]:
    """Stratum ids per kept row (None if no row has one), and the names of the ids."""
    tags = [r.stratum for r in rows]
    present = [t is not None for t in tags]
    if not any(present):
        if required or order:
            raise DatasetBuildError(
                f"{src.path}: no row has a {field!r} field; pass --stratum-field to name the "
                "stratum column"
            )
        return None, None
    if not all(present):
        first = rows[present.index(False)].line
        raise DatasetBuildError(
            f"{src.where(first)}: no {field!r} while other rows have one; tag every row or none"
        )
    if order and not all(isinstance(t, str) for t in tags):
        raise DatasetBuildError(
            f"--stratum-order names strata, but {field!r} holds integers; leave it out"
        )
    if all(isinstance(t, str) for t in tags):
        names = list(order) if order else sorted({str(t) for t in tags})
        index = {name: i for i, name in enumerate(names)}
        unknown = next((r for r in rows if r.stratum not in index), None)
        if unknown is not None:
            raise DatasetBuildError(
                f"{src.where(unknown.line)}: stratum {unknown.stratum!r} is not in "
                f"--stratum-order ({', '.join(names)}); add it there"
            )
        return np.array([index[str(t)] for t in tags], dtype=np.int64), dict(enumerate(names))
    odd = next((r for r in rows if not isinstance(r.stratum, int)), None)
    if odd is not None:
        raise DatasetBuildError(
            f"{src.where(odd.line)}: stratum {odd.stratum!r} is a name but other rows hold "
            f"integers in {field!r}; use names everywhere or integers everywhere"
        )
    ids = np.array(tags, dtype=np.int64)
    labels = src.class_label_names(field)
    return ids, None if labels is None else dict(enumerate(labels))

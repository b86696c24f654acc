"""The on-disk format of a tokenized dataset, addressable by sample id (docs/dataset-format.md).

A dataset is a directory:

    meta.json         {"format": "grace-tokens/1", "n_samples", "n_tokens", "token_dtype", ...}
    tokens.npy        (n_tokens,) uint16 or uint32: every sample's tokens, one after another
    offsets.npy       (n_samples + 1,) int64: sample i is tokens[offsets[i]:offsets[i + 1]]
    source_lines.npy  (n_samples,) int64: the 0-based input row each sample came from
    strata.npy        (n_samples,) int32, optional: a stratum tag per sample
    target_starts.npy (n_samples,) int64, optional: the first token of each sample whose
                      prediction counts (an instruction pair's response); without it, every
                      token after the first does
    sample_keys.npy   (n_samples,) int64, optional: each sample's integer key (its id column)
    sample_keys.json  optional, instead: each sample's string key, a JSON array in id order
    text.jsonl        optional: line i is {"id": i, "text": ...}, sample i's text
    tokenizer.json    optional: the tokenizer that produced the tokens

Plain `.npy` files memory-map (`np.load(mmap_mode="r")`), so a worker opens a 10 GB dataset
in milliseconds and reads only the samples it scores. A directory is written into a temporary
sibling and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_proto.usage import UsageError

FORMAT = "grace-tokens/1"
META_FILE = "meta.json"
TOKENS_FILE = "tokens.npy"
OFFSETS_FILE = "offsets.npy"
SOURCE_LINES_FILE = "source_lines.npy"
STRATA_FILE = "strata.npy"
TARGET_STARTS_FILE = "target_starts.npy"
TOKENIZER_FILE = "tokenizer.json"
KEYS_NPY_FILE = "sample_keys.npy"
KEYS_JSON_FILE = "sample_keys.json"
TEXT_FILE = "text.jsonl"


class DatasetFormatError(UsageError, ValueError):
    """A dataset directory is malformed; the message names the file and the fix."""


class DatasetExistsError(UsageError, FileExistsError):
    """The output directory exists and overwriting was not asked for."""


def token_dtype_for(vocab_size: int) -> np.dtype[Any]:
    """uint16 while every id fits (half the bytes of uint32), else uint32."""
    if vocab_size < 1:
        raise DatasetFormatError(f"vocab_size: must be >= 1, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


@dataclass(frozen=True, slots=True, eq=False)
class TokenDataset:
    """A read-only, memory-mapped dataset; `tokens(i)` is sample i's token ids."""

    path: Path
    meta: Mapping[str, Any]
    token_array: npt.NDArray[np.unsignedinteger[Any]]
    offsets: npt.NDArray[np.int64]
    source_lines: npt.NDArray[np.int64]
    strata: npt.NDArray[np.int32] | None
    target_starts: npt.NDArray[np.int64] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> TokenDataset:
        root = Path(path)
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise DatasetFormatError(
                f"{root}: no {META_FILE}; build a dataset with `grace build-dataset` "
                "(see docs/dataset-format.md)"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise DatasetFormatError(
                f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}; rebuild it"
            )
        tokens = np.load(root / TOKENS_FILE, mmap_mode="r")
        offsets = np.load(root / OFFSETS_FILE, mmap_mode="r")
        lines = np.load(root / SOURCE_LINES_FILE, mmap_mode="r")
        strata = (
            np.load(root / STRATA_FILE, mmap_mode="r") if (root / STRATA_FILE).exists() else None
        )
        starts_path = root / TARGET_STARTS_FILE
        starts = np.load(starts_path, mmap_mode="r") if starts_path.exists() else None
        dataset = cls(root, meta, tokens, offsets, lines, strata, starts)
        dataset.check()
        return dataset

    def check(self) -> None:
        """Cheap structural checks (O(N) over offsets, never over tokens)."""
        n = int(self.meta["n_samples"])
        where = str(self.path)
        if self.token_array.ndim != 1 or self.token_array.dtype.str != self.meta["token_dtype"]:
            raise DatasetFormatError(
                f"{where}/{TOKENS_FILE}: expected 1-D {self.meta['token_dtype']}, "
                f"got {self.token_array.dtype.str} with shape {self.token_array.shape}"
            )
        if self.offsets.shape != (n + 1,) or self.offsets.dtype != np.dtype("<i8"):
            raise DatasetFormatError(
                f"{where}/{OFFSETS_FILE}: expected int64 of shape ({n + 1},), "
                f"got {self.offsets.dtype} {self.offsets.shape}"
            )
        if self.offsets[0] != 0 or self.offsets[-1] != self.token_array.shape[0]:
            raise DatasetFormatError(
                f"{where}/{OFFSETS_FILE}: must start at 0 and end at the token count "
                f"{self.token_array.shape[0]}, got {self.offsets[0]}..{self.offsets[-1]}"
            )
        if n and bool((np.diff(self.offsets) < 0).any()):
            raise DatasetFormatError(f"{where}/{OFFSETS_FILE}: offsets must be non-decreasing")
        if self.source_lines.shape != (n,):
            raise DatasetFormatError(f"{where}/{SOURCE_LINES_FILE}: expected shape ({n},)")
        if self.strata is not None and self.strata.shape != (n,):
            raise DatasetFormatError(f"{where}/{STRATA_FILE}: expected shape ({n},)")
        if self.target_starts is not None:
            starts = self.target_starts
            if starts.shape != (n,):
                raise DatasetFormatError(f"{where}/{TARGET_STARTS_FILE}: expected shape ({n},)")
            # Position 0 is never predicted; a start at or past the end leaves nothing to learn.
            if n and bool(((starts < 1) | (starts >= np.diff(self.offsets))).any()):
                raise DatasetFormatError(
                    f"{where}/{TARGET_STARTS_FILE}: every start must be in 1..length-1, so that "
                    "each sample has at least one response token"
                )

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """(N,) tokens per sample."""
        return np.diff(self.offsets)

    @property
    def stratum_names(self) -> dict[int, str] | None:
        """The name of each stratum id, when the strata were names in the input."""
        names = self.meta.get("stratum_names")
        return None if not names else {int(k): str(v) for k, v in names.items()}

    @property
    def text_path(self) -> Path | None:
        """text.jsonl (line i: sample i's text), the job's `text_source`; None if not written."""
        path = self.path / TEXT_FILE
        return path if path.is_file() else None

    def sample_keys(self) -> list[int] | list[str] | None:
        """Each sample's key from the input's id column, in id order; None without one."""
        if (self.path / KEYS_NPY_FILE).is_file():
            return [int(k) for k in np.load(self.path / KEYS_NPY_FILE)]
        if (self.path / KEYS_JSON_FILE).is_file():
            keys: list[str] = json.loads((self.path / KEYS_JSON_FILE).read_text("utf-8"))
            return keys
        return None

    def tokens(self, i: int) -> npt.NDArray[np.unsignedinteger[Any]]:
        """Sample i's token ids (a view into the memory map)."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample id {i} is outside this dataset's 0..{len(self) - 1}")
        return self.token_array[self.offsets[i] : self.offsets[i + 1]]

    def check_ids(self, ids: npt.NDArray[np.int64]) -> None:
        """Refuse ids this dataset does not hold, naming the first one."""
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(self)):
            bad = int(ids[(ids < 0) | (ids >= len(self))][0])
            raise DatasetFormatError(
                f"sample id {bad} is outside the dataset {self.path} (0..{len(self) - 1}); "
                "score the job with the dataset it was created for"
            )


def write_dataset(
    path: str | os.PathLike[str],
    samples: Sequence[npt.NDArray[np.integer[Any]]],
    *,
    vocab_size: int,
    source_lines: npt.ArrayLike | None = None,
    strata: npt.ArrayLike | None = None,
    target_starts: npt.ArrayLike | None = None,
    stratum_names: Mapping[int, str] | None = None,
    sample_keys: Sequence[int | str] | None = None,
    texts: Sequence[str] | None = None,
    tokenizer_json: str | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> TokenDataset:
    """Write samples (each a 1-D array of token ids) as a dataset directory, atomically.

    target_starts: per sample, the first token whose prediction counts (the response of an
    instruction pair, after its prompt); None counts every token after the first.
    sample_keys: each sample's key (all ints or all strings); texts: each sample's text, for
    text.jsonl; stratum_names: the name of each stratum id, kept in meta.json.
    """
    for name, values in (("sample_keys", sample_keys), ("texts", texts)):
        if values is not None and len(values) != len(samples):
            raise DatasetFormatError(f"{name}: {len(values)} values for {len(samples)} samples")
    root = Path(path)
    if root.exists() and not overwrite:
        raise DatasetExistsError(f"{root} exists; pass overwrite=True (--overwrite) to replace it")
    dtype = token_dtype_for(vocab_size)
    lengths = np.fromiter((len(s) for s in samples), dtype=np.int64, count=len(samples))
    offsets = np.zeros(len(samples) + 1, dtype="<i8")
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([np.asarray(s) for s in samples]) if samples else np.zeros(0, np.int64)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= vocab_size):
        raise DatasetFormatError(
            f"token ids must be in 0..{vocab_size - 1}, found {int(flat.min())}..{int(flat.max())}"
        )
    if target_starts is not None:
        starts = np.asarray(target_starts, dtype=np.int64)
        if starts.shape != lengths.shape or bool(((starts < 1) | (starts >= lengths)).any()):
            raise DatasetFormatError(
                f"target_starts: need one start per sample ({lengths.size}), each in "
                "1..length-1 so that every sample keeps at least one response token"
            )
    lines = (
        np.arange(len(samples), dtype="<i8")
        if source_lines is None
        else np.ascontiguousarray(source_lines, dtype="<i8")
    )
    meta: dict[str, Any] = {
        "format": FORMAT,
        "n_samples": len(samples),
        "n_tokens": int(flat.size),
        "token_dtype": dtype.str,
        "vocab_size": int(vocab_size),
        "has_strata": strata is not None,
        "has_target_starts": target_starts is not None,
        "stratum_names": None
        if stratum_names is None
        else {str(k): v for k, v in sorted(stratum_names.items())},
        "tokenizer": TOKENIZER_FILE if tokenizer_json is not None else None,
        "sample_keys": None
        if sample_keys is None
        else (KEYS_JSON_FILE if all(isinstance(k, str) for k in sample_keys) else KEYS_NPY_FILE),
        "text": TEXT_FILE if texts is not None else None,
        **dict(extra_meta or {}),
    }
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        np.save(tmp / TOKENS_FILE, flat.astype(dtype))
        np.save(tmp / OFFSETS_FILE, offsets)
        np.save(tmp / SOURCE_LINES_FILE, lines)
        if strata is not None:
            np.save(tmp / STRATA_FILE, np.ascontiguousarray(strata, dtype="<i4"))
        if target_starts is not None:
            np.save(tmp / TARGET_STARTS_FILE, np.ascontiguousarray(target_starts, dtype="<i8"))
        if tokenizer_json is not None:
            (tmp / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
        if sample_keys is not None:
            _write_keys(tmp, sample_keys)
        if texts is not None:
            with (tmp / TEXT_FILE).open("w", encoding="utf-8") as fh:
                for i, text in enumerate(texts):
                    fh.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        tmp.replace(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TokenDataset.open(root)


def _write_keys(root: Path, keys: Sequence[int | str]) -> None:
    if all(isinstance(k, str) for k in keys):
        (root / KEYS_JSON_FILE).write_text(json.dumps(list(keys), ensure_ascii=False), "utf-8")
    else:
        np.save(root / KEYS_NPY_FILE, np.asarray(keys, dtype="<i8"))

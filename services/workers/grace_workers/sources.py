"""The rows a dataset is built from: JSONL, Parquet, or a Hugging Face `save_to_disk` folder.

Each reader yields `SourceRow`s in the input's row order, checked: a string text, and an
optional stratum and key that are each an integer >= 0 or a non-empty string. A problem
names its place (`file:line` for JSONL, `file row N` otherwise) and the flag that fixes it.

Parquet and Hugging Face folders are read with pyarrow alone (the `data` extra), not with
`datasets`: a `save_to_disk` folder is Arrow IPC stream files listed in its `state.json`,
already in row order (save_to_disk writes the rows an index mapping selects).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from grace_proto.usage import UsageError, missing_extra

SourceFormat = Literal["jsonl", "parquet", "hf"]
FORMATS: tuple[str, ...] = get_args(SourceFormat)
_BATCH_ROWS = 4096
Tag = int | str  # a stratum or a key as the input holds it


class DatasetBuildError(UsageError, ValueError):
    """The input cannot be built into a dataset; the message names the place and the fix."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    line: int  # 0-based row of the input (the JSONL line; the row across Parquet/Arrow files)
    text: str
    stratum: Tag | None
    key: Tag | None = None  # the value of the id column, when one is named


@dataclass(frozen=True, slots=True)
class Source:
    """An input: its path and format; `rows()` reads it, `where(row)` names a row for people."""

    path: Path
    format: SourceFormat

    @classmethod
    def open(cls, path: str | os.PathLike[str], format: str | None = None) -> Source:
        p = Path(path)
        if not p.exists():
            raise DatasetBuildError(f"{p}: no such file or folder; pass an existing --input")
        if format is None:
            return cls(p, detect_format(p))
        if format not in FORMATS:
            raise DatasetBuildError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
        return cls(p, format)  # type: ignore[arg-type]

    def where(self, row: int) -> str:
        return f"{self.path}:{row + 1}" if self.format == "jsonl" else f"{self.path} row {row}"

    def rows(
        self,
        *,
        text_field: str = "text",
        stratum_field: str | None = "stratum",
        id_column: str | None = None,
    ) -> Iterator[SourceRow]:
        if self.format == "jsonl":
            return read_jsonl_rows(
                self.path, text_field=text_field, stratum_field=stratum_field, id_column=id_column
            )
        files = parquet_files(self.path) if self.format == "parquet" else arrow_files(self.path)
        return _arrow_rows(self, files, text_field, stratum_field, id_column)

    def class_label_names(self, field: str) -> list[str] | None:
        """The names of a Hugging Face `ClassLabel` column (its ints are their indices)."""
        if self.format != "hf":
            return None
        info = self.path / "dataset_info.json"
        try:
            feature = json.loads(info.read_text(encoding="utf-8"))["features"][field]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
            names = feature.get("names")
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return names
        return None


def detect_format(path: Path) -> SourceFormat:
    """jsonl for a .jsonl/.json file, parquet for .parquet files, hf for a save_to_disk folder."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            return "jsonl"
        if suffix in (".parquet", ".pq"):
            return "parquet"
        raise DatasetBuildError(
            f"{path}: cannot tell the format from the name; pass --format jsonl or parquet"
        )
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return "hf"
    if any(path.glob("*.parquet")):
        return "parquet"
    raise DatasetBuildError(
        f"{path}: a folder with neither a Hugging Face dataset (state.json, from save_to_disk) "
        "nor .parquet files; pass one of those, or a .jsonl file"
    )


def read_jsonl_rows(
    path: str | os.PathLike[str],
    *,
    text_field: str = "text",
    stratum_field: str | None = "stratum",
    id_column: str | None = None,
) -> Iterator[SourceRow]:
    """Rows of a JSONL file, checked: every line an object with a string `text_field`.

    Without `id_column`, a line's "id" field, if any, must be its own line number (ids are
    then line numbers); with it, that field's value is the row's key.
    """
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            where = f"{path}:{line_no + 1}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetBuildError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise DatasetBuildError(
                    f"{where}: expected an object with a string {text_field!r} field; pass "
                    "--text-field to name another"
                )
            key = None
            if id_column is not None:
                key = check_tag(row.get(id_column), where, id_column, "--id-column")
                if key is None:
                    raise DatasetBuildError(f"{where}: no {id_column!r}; every row needs its key")
            elif "id" in row and row["id"] != line_no:
                raise DatasetBuildError(
                    f"{where}: id {row['id']!r} is not the line order {line_no}; without "
                    "--id-column sample ids are line numbers from 0, so pass --id-column id to "
                    "key the samples by it, or renumber the file"
                )
            stratum = None
            if stratum_field is not None:
                stratum = check_tag(row.get(stratum_field), where, stratum_field, "--stratum-field")
            yield SourceRow(line_no, row[text_field], stratum, key)


def check_tag(value: Any, where: str, field: str, flag: str) -> Tag | None:
    """A stratum or key value: None, an integer >= 0, or a non-empty string."""
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    raise DatasetBuildError(
        f"{where}: {field!r} must be an integer in [0, 2^63) or a non-empty string, got "
        f"{value!r}; "
        f"fix the value or name another column with {flag}"
    )


def parquet_files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not files:
        raise DatasetBuildError(f"{path}: no .parquet files in this folder")
    return files


def arrow_files(path: Path) -> list[Path]:
    """The Arrow files of a `save_to_disk` folder, in order (a DatasetDict names its splits)."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))
        names = ", ".join(str(s) for s in splits.get("splits", []))
        raise DatasetBuildError(
            f"{path}: a DatasetDict with splits {names}; pass one split's folder, "
            f"e.g. --input {path / (names.split(', ')[0] or 'train')}"
        )
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetBuildError(
            f"{path}/state.json: not a Hugging Face save_to_disk folder ({exc}); save it with "
            "Dataset.save_to_disk(path)"
        ) from exc
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DatasetBuildError(f"{missing[0]}: listed in state.json but missing; save it again")
    return files


def _arrow_rows(
    source: Source,
    files: Sequence[Path],
    text_field: str,
    stratum_field: str | None,
    id_column: str | None,
) -> Iterator[SourceRow]:
    wanted = [c for c in (text_field, stratum_field, id_column) if c is not None]
    row = 0
    for file in files:
        columns, batches = _record_batches(source.format, file, wanted)
        for name, flag in ((text_field, "--text-field"), (id_column, "--id-column")):
            if name is not None and name not in columns:
                raise DatasetBuildError(
                    f"{file}: no column {name!r} (columns: {', '.join(columns)}); pass {flag} "
                    "to name another"
                )
        for batch in batches:
            names = batch.schema.names
            texts = batch.column(names.index(text_field)).to_pylist()
            strata = _column(batch, stratum_field)
            keys = _column(batch, id_column)
            for i, text in enumerate(texts):
                where = source.where(row)
                if not isinstance(text, str):
                    raise DatasetBuildError(
                        f"{where}: {text_field!r} is {text!r}, not a string; fix the row or "
                        "pass --text-field"
                    )
                stratum = None if strata is None else strata[i]
                stratum = check_tag(stratum, where, str(stratum_field), "--stratum-field")
                key = (
                    None
                    if keys is None
                    else check_tag(keys[i], where, str(id_column), "--id-column")
                )
                if keys is not None and key is None:
                    raise DatasetBuildError(f"{where}: no {id_column!r}; every row needs its key")
                yield SourceRow(row, text, stratum, key)
                row += 1


def _column(batch: Any, name: str | None) -> list[Any] | None:
    if name is None or name not in batch.schema.names:
        return None
    values: list[Any] = batch.column(batch.schema.names.index(name)).to_pylist()
    return values


def _record_batches(format: str, file: Path, columns: list[str]) -> tuple[list[str], Iterator[Any]]:
    """All column names of one file, and its pyarrow RecordBatches (only the named columns,
    where the format can)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise (missing_extra(exc, f"reading {format}") or exc) from exc
    try:
        if format == "parquet":
            parquet = pq.ParquetFile(file)
            names = list(parquet.schema_arrow.names)
            present = [c for c in columns if c in names]
            return names, parquet.iter_batches(batch_size=_BATCH_ROWS, columns=present)
        reader = pa.ipc.open_stream(pa.memory_map(str(file)))
        return list(reader.schema.names), iter(reader)
    except pa.ArrowException as exc:
        kind = "Parquet" if format == "parquet" else "Arrow stream (save_to_disk)"
        raise DatasetBuildError(f"{file}: not a readable {kind} file ({exc})") from exc

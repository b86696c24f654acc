"""A table of per-sample columns written as CSV or Parquet, a chunk of rows at a time.

Both writers are generators of byte chunks, so a response can stream a table of millions of
rows without holding its text in memory. Parquet needs pyarrow (the `dashboard` extra); the
CSV writer needs nothing beyond the standard library and numpy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

CHUNK_ROWS = 65_536
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
# A spreadsheet runs a cell that starts with one of these as a formula; a quote disarms it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class MissingDependencyError(ImportError):
    """A writer's optional package is not installed; `package` and `extra` name the fix."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; pip install 'grace-coresets[{extra}]'")
        self.package = package
        self.extra = extra


@dataclass(frozen=True, slots=True, eq=False)
class Categorical:
    """A text column as codes into `labels`; code -1 is an empty cell (null in Parquet)."""

    codes: npt.NDArray[np.int32]
    labels: tuple[str, ...]


Column: TypeAlias = "npt.NDArray[Any] | Categorical"


def count_rows(columns: Mapping[str, Column]) -> int:
    lengths = {len(c.codes) if isinstance(c, Categorical) else len(c) for c in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths {sorted(lengths)}; they must match")
    return lengths.pop() if lengths else 0


def write_csv(columns: Mapping[str, Column], chunk_rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """RFC 4180 CSV with a header row. Floats print with 7 significant digits (float32's
    precision) and NaN as an empty cell; booleans as true/false; labels are quoted where
    needed and disarmed against spreadsheet formulas."""
    n = count_rows(columns)
    yield _csv_line(list(columns)).encode()
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        cells = [_format_cells(column, start, stop) for column in columns.values()]
        lines = [",".join(row) for row in zip(*cells, strict=True)]
        yield ("\r\n".join(lines) + "\r\n").encode()


def write_parquet(columns: Mapping[str, Column], chunk_rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """A Parquet file, one row group per chunk; NaN floats and code -1 labels are nulls.

    Raises MissingDependencyError at once (not on the first chunk) without pyarrow.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "dashboard") from exc
    n = count_rows(columns)
    fields = [pa.field(name, _arrow_type(pa, column)) for name, column in columns.items()]
    schema = pa.schema(fields)
    return _parquet_chunks(pa, pq, schema, columns, n, chunk_rows)


def _parquet_chunks(
    pa: Any, pq: Any, schema: Any, columns: Mapping[str, Column], n: int, chunk_rows: int
) -> Iterator[bytes]:
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for start in range(0, max(n, 1), chunk_rows):
            stop = min(n, start + chunk_rows)
            arrays = [_arrow_array(pa, c, start, stop) for c in columns.values()]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            yield _drain(sink)
    yield _drain(sink)  # the footer, written when the writer closes


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def _arrow_type(pa: Any, column: Column) -> Any:
    if isinstance(column, Categorical):
        return pa.dictionary(pa.int32(), pa.string())
    return pa.from_numpy_dtype(column.dtype)


def _arrow_array(pa: Any, column: Column, start: int, stop: int) -> Any:
    if isinstance(column, Categorical):
        codes = column.codes[start:stop]
        indices = pa.array(codes, type=pa.int32(), mask=codes < 0)
        return pa.DictionaryArray.from_arrays(indices, pa.array(column.labels, pa.string()))
    values = column[start:stop]
    mask = np.isnan(values) if values.dtype.kind == "f" else None
    return pa.array(values, mask=mask)


def _format_cells(column: Column, start: int, stop: int) -> list[str]:
    if isinstance(column, Categorical):
        labels = [_csv_cell(_disarm(label)) for label in column.labels]
        return [labels[c] if c >= 0 else "" for c in column.codes[start:stop].tolist()]
    values = column[start:stop]
    if values.dtype.kind == "b":
        return ["true" if v else "false" for v in values.tolist()]
    if values.dtype.kind == "f":
        return ["" if v != v else format(v, ".7g") for v in values.tolist()]
    return [str(v) for v in values.tolist()]


def _disarm(text: str) -> str:
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def _csv_cell(text: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([text])
    return buffer.getvalue()


def _csv_line(cells: list[str]) -> str:
    return ",".join(_csv_cell(c) for c in cells) + "\r\n"

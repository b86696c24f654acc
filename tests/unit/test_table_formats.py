"""CSV and Parquet writers: the same table both ways, streamed in chunks, safe cells."""

from __future__ import annotations

import csv
import io
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from grace_selection.adapters.table_formats import (
    Categorical,
    Column,
    MissingDependencyError,
    write_csv,
    write_parquet,
)


def table(n: int) -> dict[str, Column]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n).astype(np.float32)
    x[::7] = np.nan
    codes = rng.integers(-1, 3, n).astype(np.int32)
    return {
        "sample_id": np.arange(n, dtype=np.int64),
        "x": x,
        "member": rng.random(n) < 0.5,
        "name": Categorical(codes, ("web", "=HYPERLINK(1)", 'a "quoted", name')),
    }


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_csv_and_parquet_hold_the_same_rows(chunk_rows: int) -> None:
    columns = table(50)
    chunks = list(write_csv(columns, chunk_rows))
    assert len(chunks) == 1 + -(-50 // chunk_rows)  # a header, then one chunk per slice
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    parquet = pq.read_table(io.BytesIO(b"".join(write_parquet(columns, chunk_rows))))
    assert parquet.num_rows == len(rows) == 50
    records = parquet.to_pylist()
    for row, record in zip(rows, records, strict=True):
        assert int(row["sample_id"]) == record["sample_id"]
        if record["x"] is None:
            assert row["x"] == ""
        else:
            assert float(row["x"]) == pytest.approx(record["x"], rel=1e-6)
        assert row["member"] == ("true" if record["member"] else "false")
        label = record["name"]
        assert row["name"] == ("" if label is None else ("'" + label if label[0] == "=" else label))
    assert pq.ParquetFile(io.BytesIO(b"".join(write_parquet(columns, 7)))).num_row_groups == 8


def test_an_empty_table_is_a_header_or_an_empty_file() -> None:
    columns: dict[str, Column] = {"sample_id": np.zeros(0, np.int64)}
    assert b"".join(write_csv(columns)) == b"sample_id\r\n"
    assert pq.read_table(io.BytesIO(b"".join(write_parquet(columns)))).num_rows == 0


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        list(write_csv({"a": np.zeros(2), "b": np.zeros(3)}))


def test_without_pyarrow_parquet_fails_at_once_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes `import pyarrow` raise ImportError, as on an install
    # without the extra.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError) as info:
        write_parquet(table(3))
    assert (info.value.package, info.value.extra) == ("pyarrow", "dashboard")
    assert "pip install 'grace-coresets[dashboard]'" in str(info.value)

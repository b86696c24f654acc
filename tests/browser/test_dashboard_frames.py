"""The page's frame decoder (static/frames.js) against the Python codec, in a real browser.

The wire contract has two implementations; here every frame Python encodes must decode in the
browser to the same meta, names, dtypes, shapes and values, and every malformed frame must
be refused naming the same field as the Python decoder does.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grace_proto.frames import MAGIC, FrameError, decode_frame, encode_frame
from grace_selection.dashboard.router import create_dashboard_router
from tests.browser.conftest import ThreadedServer, console_errors
from tests.conftest import free_port

WIRE_DTYPES = ["<f4", "<f8", "<i4", "<i8", "<u4", "|u1"]

# Decodes a base64 frame with the page's own module and returns it as JSON-safe values
# (int64 as strings, floats with NaN/Inf spelled out), or the error's field.
DECODE_JS = """
const [b64, done] = arguments;
import("/dashboard/static/frames.js").then(({ decodeFrame }) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    const frame = decodeFrame(bytes.buffer);
    const arrays = {};
    for (const [name, a] of Object.entries(frame.arrays)) {
      arrays[name] = {
        dtype: a.dtype,
        shape: a.shape,
        values: Array.from(a.data, (v) =>
          typeof v === "bigint" ? v.toString() : Number.isFinite(v) ? v : String(v)),
      };
    }
    done({ meta: frame.meta, names: Object.keys(frame.arrays), arrays });
  } catch (err) {
    done({ error: err.name, field: err.field ?? null, message: err.message });
  }
}, (err) => done({ error: "import", message: String(err) }));
"""


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    """The browser on a same-origin page of a server that serves the dashboard's files."""
    app = FastAPI()
    app.include_router(create_dashboard_router())

    @app.get("/blank")
    def blank() -> HTMLResponse:
        # An empty page of the same origin (with an inline icon, so no /favicon.ico request).
        return HTMLResponse('<!doctype html><link rel="icon" href="data:,"><title>blank</title>')

    with ThreadedServer(app, free_port()) as server:
        browser.get(f"{server.url}/blank")
        console_errors(browser)  # start the module with an empty console
        yield browser


def decode_in_browser(browser: Any, body: bytes) -> dict[str, Any]:
    result: dict[str, Any] = browser.execute_async_script(
        DECODE_JS, base64.b64encode(body).decode()
    )
    return result


def as_python(values: list[Any], dtype: str) -> npt.NDArray[Any]:
    if dtype == "<i8":
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array([float(v) if isinstance(v, str) else v for v in values], dtype=dtype)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arrays=st.lists(
        st.sampled_from(WIRE_DTYPES).flatmap(
            lambda dt: hnp.arrays(
                np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
            )
        ),
        max_size=4,
    ),
    meta=st.dictionaries(
        st.text(max_size=8), st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=5))
    ),
)
def test_browser_decodes_what_python_encodes(
    page: Any, arrays: list[npt.NDArray[Any]], meta: dict[str, Any]
) -> None:
    named = {f"a{i}": arr for i, arr in enumerate(arrays)}
    result = decode_in_browser(page, encode_frame(meta, named))
    assert "error" not in result, result
    assert result["meta"] == meta
    assert result["names"] == list(named)
    for name, arr in named.items():
        got = result["arrays"][name]
        wire = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        assert got["dtype"] == wire.str
        assert got["shape"] == list(arr.shape)
        np.testing.assert_array_equal(
            as_python(got["values"], got["dtype"]), arr.reshape(-1).astype(wire)
        )


def _with_header(header: bytes, tail: bytes = b"") -> bytes:
    head = struct.pack("<4sI", MAGIC, len(header)) + header
    return head + b"\0" * ((-len(head)) % 8) + tail


MALFORMED = [
    b"GRF",
    b"NOPE\x00\x00\x00\x00",
    struct.pack("<4sI", MAGIC, 1000) + b"{}",
    _with_header(b"not json"),
    _with_header(b"[1]"),
    _with_header(b'{"meta": [1]}'),
    _with_header(b'{"arrays": 3}'),
    _with_header(b'{"arrays": [{"dtype": "<f4", "shape": [1]}]}'),
    _with_header(b'{"arrays": [{"name": "x", "dtype": "<c8", "shape": [1]}]}'),
    _with_header(b'{"arrays": [{"name": "x", "dtype": "<f4", "shape": [-1]}]}'),
    _with_header(b'{"arrays": [{"name": "x", "dtype": "<f4", "shape": [true]}]}'),
    _with_header(b'{"arrays": [{"name": "x", "dtype": "<f4", "shape": [4]}]}', b"\0" * 8),
    _with_header(b'{"arrays": [{"name": "x", "dtype": "<f4", "shape": [2]}]}', b"\0" * 16),
    _with_header(
        b'{"arrays": [{"name": "x", "dtype": "|u1", "shape": [1]},'
        b' {"name": "x", "dtype": "|u1", "shape": [1]}]}',
        b"\0" * 16,
    ),
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_browser_refuses_malformed_frames_naming_the_same_field(page: Any, body: bytes) -> None:
    with pytest.raises(FrameError) as python:
        decode_frame(body)
    result = decode_in_browser(page, body)
    assert result.get("error") == "FrameError", result
    assert result["field"] == python.value.field, (result, python.value.field)


def test_decoding_logged_no_console_errors(page: Any) -> None:
    decode_in_browser(page, encode_frame({"round": 1}, {"x": np.arange(3, dtype="<f4")}))
    assert console_errors(page) == []

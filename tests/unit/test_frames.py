"""The binary frame codec: round trips, and every malformed frame is refused by name."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grace_proto.frames import MAGIC, FrameError, decode_frame, encode_frame

WIRE_DTYPES = ["<f4", "<f8", "<i4", "<i8", "<u4", "|u1"]


@settings(max_examples=60, deadline=None)
@given(
    arrays=st.lists(
        st.sampled_from(WIRE_DTYPES).flatmap(
            lambda dt: hnp.arrays(
                np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)
            )
        ),
        max_size=4,
    ),
    meta=st.dictionaries(st.text(max_size=8), st.integers(-(2**40), 2**40), max_size=4),
)
def test_round_trip_is_exact(arrays: list[np.ndarray], meta: dict[str, int]) -> None:
    named = {f"a{i}": arr for i, arr in enumerate(arrays)}
    body = encode_frame(meta, named)
    assert len(body) % 8 == 0
    frame = decode_frame(body)
    assert dict(frame.meta) == meta
    assert list(frame.arrays) == list(named)
    for name, arr in named.items():
        np.testing.assert_array_equal(frame.arrays[name], arr)
        assert frame.arrays[name].dtype == arr.dtype.newbyteorder("<") or arr.dtype.itemsize == 1


def test_big_endian_input_is_sent_little_endian() -> None:
    arr = np.arange(4, dtype=">f4")
    frame = decode_frame(encode_frame({}, {"x": arr}))
    assert frame.arrays["x"].dtype.str == "<f4"
    np.testing.assert_array_equal(frame.arrays["x"], arr)


def test_unsupported_dtype_is_refused_on_encode() -> None:
    with pytest.raises(FrameError) as err:
        encode_frame({}, {"x": np.zeros(2, dtype=np.complex64)})
    assert err.value.field == "arrays.x.dtype"


def _frame_with_header(header: bytes, tail: bytes = b"") -> bytes:
    head = struct.pack("<4sI", MAGIC, len(header)) + header
    return head + b"\0" * ((-len(head)) % 8) + tail


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"GRF", "body"),
        (b"NOPE\x00\x00\x00\x00", "magic"),
        (struct.pack("<4sI", MAGIC, 1000) + b"{}", "header_length"),
        (_frame_with_header(b"not json"), "header"),
        (_frame_with_header(b"[1]"), "header"),
        (_frame_with_header(b'{"arrays": 3}'), "header.arrays"),
        (
            _frame_with_header(b'{"arrays": [{"name": "x", "dtype": "<c8", "shape": [1]}]}'),
            "arrays.x.dtype",
        ),
        (
            _frame_with_header(b'{"arrays": [{"name": "x", "dtype": "<f4", "shape": [-1]}]}'),
            "arrays.x.shape",
        ),
        (
            _frame_with_header(
                b'{"arrays": [{"name": "x", "dtype": "<f4", "shape": [4]}]}', b"\0" * 8
            ),
            "arrays.x",
        ),
        (_frame_with_header(b'{"arrays": []}', b"\0" * 8), "body"),
    ],
)
def test_malformed_frames_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(FrameError) as err:
        decode_frame(body)
    assert err.value.field == field
    assert err.value.message


def test_array_accessor_checks_dtype_and_rank() -> None:
    frame = decode_frame(encode_frame({}, {"ids": np.arange(3, dtype=np.int32)}))
    with pytest.raises(FrameError, match="expected <i8"):
        frame.array("ids", "<i8", 1)
    with pytest.raises(FrameError, match="missing"):
        frame.array("loss", "<f4", 1)
    with pytest.raises(FrameError, match="dimensions"):
        frame.array("ids", "<i4", 2)
    assert frame.array("ids", "<i4", 1).tolist() == [0, 1, 2]

"""Binary frames: how bulk arrays cross the wire (see proto/FRAMES.md).

Layout, all little-endian:

    offset 0   4 bytes  magic b"GRF1"
    offset 4   4 bytes  uint32 header length H
    offset 8   H bytes  UTF-8 JSON header:
                        {"meta": {...}, "arrays": [{"name", "dtype", "shape"}, ...]}
    then       zero padding up to a multiple of 8
    then       each array's raw C-order bytes, in header order, each padded to a multiple of 8

`meta` carries the batch id (idempotency key), round, source, step and other scalars.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"GRF1"
MEDIA_TYPE = "application/octet-stream"
_PREFIX = struct.Struct("<4sI")
_MAX_HEADER = 64 * 1024
# Wire dtypes: explicit little-endian so that a big-endian peer cannot be misread.
ALLOWED_DTYPES: dict[str, np.dtype[Any]] = {
    "<f4": np.dtype("<f4"),
    "<f8": np.dtype("<f8"),
    "<i4": np.dtype("<i4"),
    "<i8": np.dtype("<i8"),
    "<u4": np.dtype("<u4"),
    "|u1": np.dtype("|u1"),
}


class FrameError(ValueError):
    """A frame is malformed. `field` names the part at fault; the message says how to fix it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    meta: Mapping[str, Any]
    arrays: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def array(self, name: str, dtype: str, ndim: int) -> npt.NDArray[Any]:
        """The named array, checked for dtype and rank, or a FrameError naming it."""
        if name not in self.arrays:
            raise FrameError(f"arrays.{name}", f"missing; this frame needs an array named {name!r}")
        arr = self.arrays[name]
        if arr.dtype != np.dtype(dtype):
            raise FrameError(
                f"arrays.{name}.dtype",
                f"expected {dtype}, got {arr.dtype.str}; cast it before sending",
            )
        if arr.ndim != ndim:
            raise FrameError(
                f"arrays.{name}.shape", f"expected {ndim} dimensions, got shape {list(arr.shape)}"
            )
        return arr


def _pad(n: int) -> int:
    return (-n) % 8


def encode_frame(meta: Mapping[str, Any], arrays: Mapping[str, npt.ArrayLike]) -> bytes:
    """Serialise meta and named arrays; arrays are converted to their little-endian wire dtype."""
    specs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, value in arrays.items():
        arr = np.asarray(value)
        wire = arr.dtype.newbyteorder("<") if arr.dtype.byteorder not in ("|",) else arr.dtype
        if wire.str not in ALLOWED_DTYPES:
            raise FrameError(
                f"arrays.{name}.dtype",
                f"{arr.dtype} cannot be sent; use one of {sorted(ALLOWED_DTYPES)}",
            )
        data = np.ascontiguousarray(arr, dtype=wire).tobytes()
        specs.append({"name": name, "dtype": wire.str, "shape": list(arr.shape)})
        blobs.append(data + b"\0" * _pad(len(data)))
    header = json.dumps({"meta": dict(meta), "arrays": specs}, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, len(header)) + header
    return b"".join([head, b"\0" * _pad(len(head)), *blobs])


def decode_frame(body: bytes | bytearray | memoryview) -> Frame:
    """Parse a frame without copying array data; raises FrameError on any inconsistency."""
    buf = memoryview(body)
    if len(buf) < _PREFIX.size:
        raise FrameError("body", f"{len(buf)} bytes is too short for a frame (8-byte prefix)")
    magic, header_len = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FrameError("magic", f"expected {MAGIC!r}, got {bytes(magic)!r}: not a GRACE frame")
    if header_len > _MAX_HEADER or _PREFIX.size + header_len > len(buf):
        raise FrameError("header_length", f"{header_len} does not fit in a {len(buf)}-byte body")
    try:
        header = json.loads(bytes(buf[_PREFIX.size : _PREFIX.size + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError("header", f"not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("meta", {}), dict):
        raise FrameError("header", 'must be a JSON object {"meta": {...}, "arrays": [...]}')
    specs = header.get("arrays", [])
    if not isinstance(specs, list):
        raise FrameError("header.arrays", "must be a list of {name, dtype, shape}")
    offset = _PREFIX.size + header_len
    offset += _pad(offset)
    arrays: dict[str, npt.NDArray[Any]] = {}
    for i, spec in enumerate(specs):
        arrays_name, arr, offset = _read_array(buf, spec, i, offset)
        if arrays_name in arrays:
            raise FrameError(f"arrays.{arrays_name}", "appears twice; names must be unique")
        arrays[arrays_name] = arr
    if offset != len(buf):
        raise FrameError(
            "body", f"{len(buf) - offset} trailing bytes after the arrays the header declares"
        )
    return Frame(meta=header.get("meta", {}), arrays=arrays)


def _read_array(
    buf: memoryview, spec: Any, i: int, offset: int
) -> tuple[str, npt.NDArray[Any], int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise FrameError(f"header.arrays[{i}]", "must be an object with a string name")
    name = spec["name"]
    dtype = ALLOWED_DTYPES.get(str(spec.get("dtype")))
    if dtype is None:
        raise FrameError(
            f"arrays.{name}.dtype",
            f"{spec.get('dtype')!r} is not a wire dtype; use one of {sorted(ALLOWED_DTYPES)}",
        )
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise FrameError(f"arrays.{name}.shape", "must be a list of non-negative integers")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    nbytes = count * dtype.itemsize
    end = offset + nbytes
    if end > len(buf):
        raise FrameError(
            f"arrays.{name}",
            f"declares {nbytes} bytes for shape {shape} but the body ends {end - len(buf)} early",
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
    return name, arr, end + _pad(nbytes)

"""Values that cross the ScoreStore port: log entries, state snapshots, published rounds.

The store keeps bytes and packed arrays; what a log payload means is the service's business.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# Array dtypes a store must round-trip; all little-endian so files and Redis values are portable.
STORED_DTYPES = frozenset({"<f2", "<f4", "<f8", "<i4", "<i8", "<u4", "|u1", "|b1"})


class StoreError(RuntimeError):
    """The store cannot serve the request (unreachable, or its data is damaged)."""


class RoundExistsError(StoreError):
    """A round with this number is already published; published rounds never change."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """seq: the log position holding this batch (the earlier one when it is a duplicate).
    duplicate: True if the batch id was already applied; nothing was written this time.
    checksum: crc32 of the payload stored under this batch id (to detect a reused id).
    """

    seq: int
    duplicate: bool
    checksum: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One applied batch. seq counts from 1 per job; kind and batch_id are short ASCII."""

    seq: int
    kind: str
    batch_id: str
    payload: bytes


@dataclass(frozen=True, slots=True, eq=False)
class StateSnapshot:
    """A job's compacted state: it covers every log entry with seq <= `seq`."""

    seq: int
    arrays: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class StoredRound:
    """A published round: its manifest (JSON bytes, served as stored) and its arrays."""

    round: int
    manifest: bytes
    arrays: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)


def compute_checksum(payload: bytes | memoryview) -> int:
    """crc32 of a payload, the value stored beside each batch id."""
    return zlib.crc32(payload) & 0xFFFFFFFF


def format_batch_field(kind: str, batch_id: str) -> str:
    """Batch ids are scoped by kind: an embeddings batch and a scores batch may share an id."""
    return f"{kind}:{batch_id}"


def pack_array(name: str, value: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The array as a C-contiguous little-endian array of a dtype stores can keep."""
    arr = np.asarray(value)
    dtype = arr.dtype if arr.dtype.byteorder in ("<", "|", "=") else arr.dtype.newbyteorder("<")
    if dtype.str not in STORED_DTYPES:
        raise ValueError(f"{name}: dtype {arr.dtype} cannot be stored; use one of {STORED_DTYPES}")
    out: npt.NDArray[Any] = np.ascontiguousarray(arr, dtype=np.dtype(dtype.str))
    return out

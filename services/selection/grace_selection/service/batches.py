"""Incoming batches: parsed from frames (or JSON), checked, and turned into log payloads.

Every check runs before anything is applied, and names the field and the fix. A batch's log
payload is a frame: the request body itself when it came as a frame (no re-encoding), or the
JSON form encoded as one. Replaying a payload runs the same parser, so a restarted service
applies exactly what the live one did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from grace_proto.frames import Frame, FrameError, decode_frame, encode_frame
from grace_proto.models import ScoreBatchRequest
from grace_proto.names import SCORE_SOURCES, ScoreSourceName
from grace_selection.service.errors import InvalidInputError, MalformedRequestError

BatchKind = Literal["embeddings", "scores", "strata"]
BATCH_ID_MAX = 128
_META_KEYS: dict[str, frozenset[str]] = {
    "embeddings": frozenset({"batch_id", "round"}),
    "scores": frozenset({"batch_id", "source", "round", "step"}),
    "strata": frozenset({"batch_id"}),
}
_ARRAYS: dict[str, frozenset[str]] = {
    "embeddings": frozenset({"ids", "embeddings"}),
    "scores": frozenset({"ids", "loss", "importance"}),
    "strata": frozenset({"strata"}),
}


@dataclass(frozen=True, slots=True, eq=False)
class EmbeddingBatch:
    batch_id: str
    round: int
    ids: npt.NDArray[np.int64]  # (n,)
    vectors: npt.NDArray[np.float32]  # (n, dim)
    payload: bytes
    kind: BatchKind = "embeddings"


@dataclass(frozen=True, slots=True, eq=False)
class ScoreBatch:
    batch_id: str
    source: ScoreSourceName
    round: int
    step: int
    ids: npt.NDArray[np.int64]  # (n,)
    loss: npt.NDArray[np.float32] | None  # (n,)
    importance: npt.NDArray[np.float32] | None  # (n,)
    payload: bytes
    kind: BatchKind = "scores"


@dataclass(frozen=True, slots=True, eq=False)
class StrataBatch:
    batch_id: str
    strata: npt.NDArray[np.int32]  # (N,)
    payload: bytes
    kind: BatchKind = "strata"


Batch = EmbeddingBatch | ScoreBatch | StrataBatch


def parse_batch(kind: str, body: bytes, n: int, dim: int) -> Batch:
    """Parse and check a frame body of the given kind for a job of n samples and dim."""
    if kind == "embeddings":
        return parse_embeddings(body, n, dim)
    if kind == "scores":
        return parse_scores(body, n)
    if kind == "strata":
        return parse_strata(body, n)
    raise ValueError(f"unknown batch kind {kind!r}")


def parse_embeddings(body: bytes, n: int, dim: int) -> EmbeddingBatch:
    frame = _decode(body, "embeddings")
    ids = _ids(frame, n)
    vectors = _array(frame, "embeddings", "<f4", 2)
    if vectors.shape != (ids.shape[0], dim):
        raise InvalidInputError(
            f"expected shape [{ids.shape[0]}, {dim}] (one row of dim {dim} per id), got "
            f"{list(vectors.shape)}",
            field="arrays.embeddings.shape",
        )
    _check_vectors(vectors)
    round_ = _int_meta(frame.meta, "round", 0)
    return EmbeddingBatch(_batch_id(frame.meta), round_, ids, vectors, body)


def parse_scores(body: bytes, n: int) -> ScoreBatch:
    frame = _decode(body, "scores")
    ids = _ids(frame, n)
    loss = _values(frame, "loss", ids.shape[0])
    importance = _values(frame, "importance", ids.shape[0])
    if loss is None and importance is None:
        raise InvalidInputError(
            "a scores frame needs a `loss` array, an `importance` array, or both", field="arrays"
        )
    source = frame.meta.get("source")
    if source not in SCORE_SOURCES:
        raise InvalidInputError(
            f"must be one of {list(SCORE_SOURCES)}, got {source!r}", field="meta.source"
        )
    return ScoreBatch(
        batch_id=_batch_id(frame.meta),
        source=source,
        round=_int_meta(frame.meta, "round", None),
        step=_int_meta(frame.meta, "step", 0),
        ids=ids,
        loss=loss,
        importance=importance,
        payload=body,
    )


def parse_strata(body: bytes, n: int) -> StrataBatch:
    frame = _decode(body, "strata")
    strata = _array(frame, "strata", "<i4", 1)
    if strata.shape[0] != n:
        raise InvalidInputError(
            f"has {strata.shape[0]} tags but the job has {n} samples; send one per sample",
            field="arrays.strata.shape",
        )
    if strata.size and strata.min() < 0:
        bad = int(np.flatnonzero(strata < 0)[0])
        raise InvalidInputError(
            f"tags must be >= 0; position {bad} holds {int(strata[bad])}", field="arrays.strata"
        )
    return StrataBatch(_batch_id(frame.meta), strata, body)


def parse_score_json(request: ScoreBatchRequest, n: int) -> ScoreBatch:
    """The JSON form of a small score batch, checked like a frame and encoded as one."""
    try:
        ids = np.asarray(request.ids, dtype=np.int64)
    except OverflowError as exc:  # the wire model bounds ids; a caller in-process may not
        raise InvalidInputError(
            f"holds an id beyond int64; ids must be in [0, {n - 1}]", field="ids"
        ) from exc
    arrays: dict[str, npt.NDArray[Any]] = {"ids": ids}
    for name in ("loss", "importance"):
        values = getattr(request, name)
        if values is not None:
            if len(values) != len(request.ids):
                raise InvalidInputError(
                    f"has {len(values)} values for {len(request.ids)} ids; send one per id",
                    field=name,
                )
            arrays[name] = np.asarray(values, dtype=np.float64).astype(np.float32)
    meta = {
        "batch_id": request.batch_id,
        "source": request.source,
        "round": request.round,
        "step": request.step,
    }
    return parse_scores(encode_frame(meta, arrays), n)


def _decode(body: bytes, kind: str) -> Frame:
    try:
        frame = decode_frame(body)
    except FrameError as exc:
        raise MalformedRequestError(
            f"{exc.message} (see proto/FRAMES.md for the layout)",
            field=exc.field,
            code="invalid_frame",
        ) from exc
    _check_names(kind, frame)
    return frame


def _check_names(kind: str, frame: Frame) -> None:
    unknown_meta = sorted(set(frame.meta) - _META_KEYS[kind])
    if unknown_meta:
        raise InvalidInputError(
            f"unknown key {unknown_meta[0]!r}; a {kind} frame's meta may hold "
            f"{sorted(_META_KEYS[kind])}",
            field=f"meta.{unknown_meta[0]}",
        )
    unknown_arrays = sorted(set(frame.arrays) - _ARRAYS[kind])
    if unknown_arrays:
        raise InvalidInputError(
            f"unknown array {unknown_arrays[0]!r}; a {kind} frame holds {sorted(_ARRAYS[kind])}",
            field=f"arrays.{unknown_arrays[0]}",
        )


def _batch_id(meta: Mapping[str, Any]) -> str:
    value = meta.get("batch_id")
    if not isinstance(value, str) or not 1 <= len(value) <= BATCH_ID_MAX:
        raise InvalidInputError(
            f"must be a string of 1..{BATCH_ID_MAX} characters (the batch's idempotency key), "
            f"got {value!r}",
            field="meta.batch_id",
        )
    if not value.isprintable():
        raise InvalidInputError("must hold printable characters only", field="meta.batch_id")
    return value


def _int_meta(meta: Mapping[str, Any], name: str, default: int | None) -> int:
    value = meta.get(name, default)
    if value is None:
        raise InvalidInputError(
            "is required: the round these values are for (>= 0)", field=f"meta.{name}"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise InvalidInputError(f"must be an integer >= 0, got {value!r}", field=f"meta.{name}")
    return value


def _array(frame: Frame, name: str, dtype: str, ndim: int) -> npt.NDArray[Any]:
    try:
        return frame.array(name, dtype, ndim)
    except FrameError as exc:
        raise InvalidInputError(exc.message, field=exc.field) from exc


def _ids(frame: Frame, n: int) -> npt.NDArray[np.int64]:
    ids = _array(frame, "ids", "<i8", 1)
    if ids.shape[0] == 0:
        raise InvalidInputError("is empty; send at least one id", field="arrays.ids")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= n:
        bad = int(np.flatnonzero((ids < 0) | (ids >= n))[0])
        raise InvalidInputError(
            f"id {int(ids[bad])} at position {bad} is out of range; ids must be in [0, {n - 1}]",
            field="arrays.ids",
        )
    return ids


def _values(frame: Frame, name: str, count: int) -> npt.NDArray[np.float32] | None:
    if name not in frame.arrays:
        return None
    values = _array(frame, name, "<f4", 1)
    if values.shape[0] != count:
        raise InvalidInputError(
            f"has {values.shape[0]} values for {count} ids; send one per id",
            field=f"arrays.{name}.shape",
        )
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(
            f"position {bad} holds {float(values[bad])}; values must be finite (no NaN or inf)",
            field=f"arrays.{name}",
        )
    return values


def _check_vectors(vectors: npt.NDArray[np.float32]) -> None:
    """One pass finds NaN, inf and zero rows: all three make a row's squared norm non-positive
    or non-finite (cosine similarity is undefined for them)."""
    with np.errstate(over="ignore", invalid="ignore"):
        squared = np.einsum("ij,ij->i", vectors, vectors)
    good = np.isfinite(squared) & (squared > 0)
    if not good.all():
        row = int(np.flatnonzero(~good)[0])
        problem = "is all zeros" if squared[row] == 0 else "holds NaN, inf or a huge value"
        raise InvalidInputError(
            f"row {row} {problem}; every embedding must be finite and non-zero",
            field="arrays.embeddings",
        )


def find_duplicate(ids: npt.NDArray[np.int64], scratch: npt.NDArray[np.int64]) -> int | None:
    """The first id that appears twice, or None, in O(n) with a scratch array of length N.

    Write each position at its id; an id seen twice keeps only its last position, so some
    earlier position reads back another value. No sort needed.
    """
    positions = np.arange(ids.shape[0], dtype=np.int64)
    scratch[ids] = positions
    mismatch = scratch[ids] != positions
    if not mismatch.any():
        return None
    return int(ids[int(np.flatnonzero(mismatch)[0])])

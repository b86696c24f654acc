"""The array-bearing answers of the service (index slices, rescore plans, projections).

They arrive as binary frames (grace_proto.frames); here they become small frozen dataclasses
over numpy arrays, checked once so that the rest of the client can trust them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_client.errors import IntegrityError
from grace_proto.frames import Frame, FrameError, decode_frame
from grace_proto.models import CheckpointInfo, IndicesResponse


@dataclass(frozen=True, slots=True, eq=False)
class IndexSlice:
    """One rank's share of a round's coreset.

    indices: (n,) int64 sample ids in the service's seeded order for this (round, rank, world).
    weights: (n,) float32 CRAIG-style weights, or None when the job is unweighted.
    total: the coreset size K before slicing; every rank gets ceil(K / world) ids.
    indices_sha256: the manifest's sha256 of the sorted coreset (what trainers verify).
    """

    job_id: str
    round: int
    rank: int
    world: int
    indices: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32] | None
    total: int
    indices_sha256: str
    job_incarnation: str | None = None  # the job's incarnation, as the service named it

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class RescorePlan:
    """The ids one worker shard must score for round `round + 1`, and the checkpoint to use."""

    job_id: str
    round: int
    shard: int
    of: int
    ids: npt.NDArray[np.int64]
    checkpoint: CheckpointInfo | None


@dataclass(frozen=True, slots=True, eq=False)
class Projection:
    """A 2-D map of (a sample of) the embeddings, for plots: xy is (n, 2) float32."""

    ids: npt.NDArray[np.int64]
    xy: npt.NDArray[np.float32]
    importance: npt.NDArray[np.float32]
    in_coreset: npt.NDArray[np.bool_]


def sha256_of_sorted(indices: npt.NDArray[np.int64]) -> str:
    """sha256 of the sorted little-endian int64 bytes: how a manifest names its coreset."""
    ordered = np.sort(np.asarray(indices, dtype="<i8"))
    return hashlib.sha256(ordered.tobytes()).hexdigest()


def decode_index_slice(frame: Frame) -> IndexSlice:
    """An IndexSlice from an indices frame; FrameError names what is missing or wrong."""
    meta = frame.meta
    incarnation = meta.get("job_incarnation")
    indices = frame.array("indices", "<i8", 1)
    weights = None
    if "weights" in frame.arrays:
        weights = frame.array("weights", "<f4", 1)
        if weights.shape != indices.shape:
            raise FrameError(
                "arrays.weights.shape",
                f"{list(weights.shape)} does not match indices {list(indices.shape)}",
            )
    return IndexSlice(
        job_id=str(_meta(meta, "job_id")),
        round=int(_meta(meta, "round")),
        rank=int(_meta(meta, "rank")),
        world=int(_meta(meta, "world")),
        indices=indices,
        weights=weights,
        total=int(_meta(meta, "total")),
        indices_sha256=str(_meta(meta, "indices_sha256")),
        job_incarnation=None if incarnation is None else str(incarnation),
    )


def encode_index_slice(piece: IndexSlice) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """The (meta, arrays) of a frame that decode_index_slice turns back into `piece`."""
    meta = {
        "job_id": piece.job_id,
        "round": piece.round,
        "rank": piece.rank,
        "world": piece.world,
        "total": piece.total,
        "indices_sha256": piece.indices_sha256,
        "job_incarnation": piece.job_incarnation,
    }
    arrays: dict[str, npt.NDArray[Any]] = {"indices": piece.indices}
    if piece.weights is not None:
        arrays["weights"] = piece.weights
    return meta, arrays


def decode_rescore_plan(frame: Frame, *, job: str, round_: int, shard: int, of: int) -> RescorePlan:
    """A RescorePlan from a rescore frame; the checkpoint travels in meta (null if none)."""
    ids = frame.array("ids", "<i8", 1)
    raw_checkpoint = frame.meta.get("checkpoint")
    checkpoint = None if raw_checkpoint is None else CheckpointInfo.model_validate(raw_checkpoint)
    return RescorePlan(
        job_id=str(frame.meta.get("job_id", job)),
        round=int(frame.meta.get("round", round_)),
        shard=int(frame.meta.get("shard", shard)),
        of=int(frame.meta.get("of", of)),
        ids=ids,
        checkpoint=checkpoint,
    )


def decode_projection(frame: Frame) -> Projection:
    return Projection(
        ids=frame.array("ids", "<i8", 1),
        xy=frame.array("xy", "<f4", 2),
        importance=frame.array("importance", "<f4", 1),
        in_coreset=frame.array("in_coreset", "|u1", 1).astype(bool),
    )


def _meta(meta: Any, key: str) -> Any:
    if key not in meta:
        raise FrameError(f"meta.{key}", "missing from the indices frame the service sent")
    return meta[key]


def parse_indices_body(content_type: str, body: bytes) -> IndexSlice:
    if content_type.startswith("application/json"):
        model = IndicesResponse.model_validate_json(body)
        weights = None if model.weights is None else np.asarray(model.weights, dtype=np.float32)
        return IndexSlice(
            job_id=model.job_id,
            round=model.round,
            rank=model.rank,
            world=model.world,
            indices=np.asarray(model.indices, dtype=np.int64),
            weights=weights,
            total=model.total,
            indices_sha256=model.indices_sha256,
            job_incarnation=model.job_incarnation,
        )
    return decode_index_slice(decode_frame(body))


def verify_slice(piece: IndexSlice, job: str) -> None:
    """Check what a single slice can prove: its length, and for world=1 the manifest's sha."""
    expected = math.ceil(piece.total / piece.world) if piece.total else 0
    if len(piece) != expected:
        raise IntegrityError(
            f"round {piece.round} of job {job!r}: rank {piece.rank} got {len(piece)} ids, the "
            f"slicing rule promises ceil({piece.total} / {piece.world}) = {expected}"
        )
    if piece.world == 1 and sha256_of_sorted(piece.indices) != piece.indices_sha256:
        raise IntegrityError(
            f"round {piece.round} of job {job!r}: the indices do not hash to the manifest's "
            f"sha256 {piece.indices_sha256[:12]}...; not using them"
        )

"""A published round's data in memory, and the encoded answers served from it.

A round never changes once published, so the bytes of each (rank, world, format) slice are
computed once and kept: a trainer fleet asking for its slices costs a dictionary lookup each.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from grace_proto.frames import encode_frame
from grace_proto.models import CheckpointInfo, IndicesResponse, RescorePlanResponse
from grace_selection.core.round_diff import RoundArrays
from grace_selection.service.slicing import slice_for_rank, slice_for_shard

if TYPE_CHECKING:
    from grace_selection.service.lifecycle import PublishedRound

_MAX_CACHED_BODIES = 4096  # per round; (rank, world, format) combinations are few in practice


@dataclass(frozen=True, slots=True)
class Body:
    """Encoded answer: bytes plus their media type."""

    content: bytes
    media_type: str


class RoundData:
    """A published round's arrays: indices (K,) int64 sorted, weights (K,) float32 or None,
    rescore (m,) int64: the plan to score for the next round, importance (N,) float32: what
    this round's selection used, estimated (N,) bool: which of it were estimates, loss (N,)
    float32: the loss it saw. `round` is the published round they belong to, `incarnation`
    the job's (slices carry it, also for rounds whose manifest predates the field).
    Importance, estimated and loss are None for a round stored without them."""

    def __init__(
        self, round_: PublishedRound, arrays: dict[str, npt.NDArray[Any]], incarnation: str = ""
    ) -> None:
        self.round = round_
        self.incarnation = incarnation
        self.indices: npt.NDArray[np.int64] = np.asarray(arrays["indices"], dtype=np.int64)
        weights = arrays.get("weights")
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.rescore: npt.NDArray[np.int64] = np.asarray(arrays["rescore"], dtype=np.int64)
        importance = arrays.get("importance")
        self.importance = None if importance is None else np.asarray(importance, np.float32)
        loss = arrays.get("loss")
        self.loss = None if loss is None else np.asarray(loss, np.float32)
        estimated = arrays.get("estimated")
        self.estimated = None if estimated is None else np.asarray(estimated).astype(np.bool_)
        self._bodies: dict[tuple[Any, ...], Body] = {}
        self._lock = threading.Lock()

    def indices_body(self, rank: int, world: int, fmt: str) -> Body:
        key = ("indices", rank, world, fmt)
        cached = self._bodies.get(key)
        if cached is None:
            cached = self._remember(key, self._encode_indices(rank, world, fmt))
        return cached

    def as_arrays(self, n: int) -> RoundArrays:
        """The core's view of this round (importance all NaN if the round stored none)."""
        importance = self.importance if self.importance is not None else np.full(n, np.nan)
        return RoundArrays(
            self.indices, np.asarray(importance, np.float32), self.loss, self.estimated
        )

    def in_coreset(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        pos = np.searchsorted(self.indices, ids)
        pos = np.minimum(pos, max(self.indices.shape[0] - 1, 0))
        hit: npt.NDArray[np.bool_] = (
            self.indices[pos] == ids if self.indices.size else np.zeros(ids.shape, bool)
        )
        return hit

    def _remember(self, key: tuple[Any, ...], body: Body) -> Body:
        with self._lock:
            if len(self._bodies) >= _MAX_CACHED_BODIES:
                self._bodies.clear()
            self._bodies[key] = body
        return body

    def _encode_indices(self, rank: int, world: int, fmt: str) -> Body:
        m = self.round.manifest
        positions = slice_for_rank(self.indices.shape[0], m.seed, m.round, rank, world)
        ids = self.indices[positions]
        weights = None if self.weights is None else self.weights[positions]
        sha = m.indices_sha256 or ""
        if fmt == "json":
            answer = IndicesResponse(
                job_id=m.job_id,
                round=m.round,
                rank=rank,
                world=world,
                indices=ids.tolist(),
                weights=None if weights is None else weights.tolist(),
                total=int(self.indices.shape[0]),
                indices_sha256=sha,
                job_incarnation=self.incarnation or None,
            )
            return Body(answer.model_dump_json().encode(), "application/json")
        meta = {
            "job_id": m.job_id,
            "round": m.round,
            "rank": rank,
            "world": world,
            "total": int(self.indices.shape[0]),
            "indices_sha256": sha,
            "job_incarnation": self.incarnation or None,
        }
        arrays: dict[str, npt.NDArray[Any]] = {"indices": ids}
        if weights is not None:
            arrays["weights"] = weights
        return Body(encode_frame(meta, arrays), "application/octet-stream")


def encode_rescore(
    job_id: str,
    round_: int,
    plan: npt.NDArray[np.int64],
    shard: int,
    of: int,
    fmt: str,
    checkpoint: CheckpointInfo | None,
) -> Body:
    """The ids shard `shard` of `of` scores for round `round_`, with the checkpoint to use."""
    ids = slice_for_shard(plan, shard, of)
    if fmt == "json":
        answer = RescorePlanResponse(
            job_id=job_id, round=round_, shard=shard, of=of, ids=ids.tolist(), checkpoint=checkpoint
        )
        return Body(answer.model_dump_json().encode(), "application/json")
    meta: dict[str, Any] = {
        "job_id": job_id,
        "round": round_,
        "shard": shard,
        "of": of,
        "total": int(plan.shape[0]),
    }
    # The checkpoint to score with travels as an object (null if none) in the frame's meta.
    meta["checkpoint"] = None if checkpoint is None else checkpoint.model_dump(mode="json")
    return Body(encode_frame(meta, {"ids": ids}), "application/octet-stream")


class RoundCache:
    """The arrays of the most recently used rounds (a round's importance is N floats)."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._data: OrderedDict[int, RoundData] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, round_: int) -> RoundData | None:
        with self._lock:
            data = self._data.get(round_)
            if data is not None:
                self._data.move_to_end(round_)
            return data

    def put(self, round_: int, data: RoundData) -> None:
        with self._lock:
            self._data[round_] = data
            self._data.move_to_end(round_)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)


def measure_churn(
    previous: npt.NDArray[np.int64] | None, current: npt.NDArray[np.int64]
) -> float | None:
    """Share of `current` (sorted ids) not in `previous`; None for the first round."""
    if previous is None or current.size == 0:
        return None
    kept = np.intersect1d(previous, current, assume_unique=True).size
    return float(1.0 - kept / current.size)

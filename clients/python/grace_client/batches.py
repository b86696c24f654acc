"""How one `report(...)` call becomes idempotent score batches, ready to send.

Kept apart from the reporter's queue and thread: this is the pure part (conversion,
cleaning, chunking, deterministic batch ids, merging a backlog), the same in a run and in its
replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True, eq=False)
class ReportBatch:
    """One request's worth of a report: ids with their losses/importance/embeddings."""

    batch_id: str
    ids: npt.NDArray[np.int64]
    loss: npt.NDArray[np.float32] | None
    importance: npt.NDArray[np.float32] | None
    embeddings: npt.NDArray[np.float32] | None
    round: int
    step: int

    @property
    def nbytes(self) -> int:
        arrays = (self.ids, self.loss, self.importance, self.embeddings)
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class CleanReport:
    """A report's arrays as owned copies, and which samples can be sent (`keep`)."""

    ids: npt.NDArray[np.int64]
    loss: npt.NDArray[np.float32] | None
    importance: npt.NDArray[np.float32] | None
    embeddings: npt.NDArray[np.float32] | None
    keep: npt.NDArray[np.bool_]

    @property
    def nonfinite(self) -> int:
        return int(self.ids.shape[0] - self.keep.sum())


def clean_report(indices: Any, losses: Any, importance: Any, embeddings: Any) -> CleanReport:
    """Copy and check one report; samples with a NaN/Inf value are marked not to keep.

    Raises ValueError naming the argument when shapes do not match.
    """
    if losses is None and importance is None and embeddings is None:
        raise ValueError("losses, importance, embeddings: pass at least one of them")
    ids = as_vector(indices, np.int64, "indices")
    n = ids.shape[0]
    loss = None if losses is None else as_vector(losses, np.float32, "losses", n)
    imp = None if importance is None else as_vector(importance, np.float32, "importance", n)
    emb = None
    if embeddings is not None:
        emb = np.array(to_numpy(embeddings), dtype=np.float32, copy=True)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings: expected shape ({n}, dim), got {list(emb.shape)}")
    keep = np.ones(n, dtype=bool)
    for values in (loss, imp):
        if values is not None:
            keep &= np.isfinite(values)
    if emb is not None:
        keep &= np.isfinite(emb).all(axis=1)
    return CleanReport(ids, loss, imp, emb, keep)


def split_report(
    report: CleanReport, *, prefix: str, chunk_size: int, round_: int, step: int
) -> list[ReportBatch]:
    """The kept samples in chunks of `chunk_size`, batch ids `<prefix>.c<chunk>`.

    The service refuses a batch that names a sample twice, so only the last occurrence of
    an id in the report is sent.
    """
    ids, keep = report.ids, report.keep
    _, last = np.unique(ids[::-1], return_index=True)
    unique = np.zeros(ids.shape[0], dtype=bool)
    unique[ids.shape[0] - 1 - last] = True
    keep = keep & unique
    loss, imp, emb = report.loss, report.importance, report.embeddings
    if not keep.all():
        ids = ids[keep]
        loss = None if loss is None else loss[keep]
        imp = None if imp is None else imp[keep]
        emb = None if emb is None else emb[keep]
    out = []
    for chunk, start in enumerate(range(0, ids.shape[0], chunk_size)):
        part = slice(start, start + chunk_size)
        out.append(
            ReportBatch(
                batch_id=f"{prefix}.c{chunk}",
                ids=ids[part],
                loss=None if loss is None else loss[part],
                importance=None if imp is None else imp[part],
                embeddings=None if emb is None else emb[part],
                round=round_,
                step=step,
            )
        )
    return out


def can_merge(a: ReportBatch, b: ReportBatch) -> bool:
    """Whether two batches can travel as one request: same round, the same arrays."""
    return (
        a.round == b.round
        and (a.loss is None) == (b.loss is None)
        and (a.importance is None) == (b.importance is None)
        and (a.embeddings is None) == (b.embeddings is None)
        and (
            a.embeddings is None
            or b.embeddings is None
            or a.embeddings.shape[1:] == b.embeddings.shape[1:]
        )
    )


def merge_batches(parts: Sequence[ReportBatch], *, prefix: str) -> ReportBatch:
    """One batch holding `parts` in order (mergeable ones: see `can_merge`), each sample once
    with its last values, as sending them one after another would have left it.

    Its batch id is `<prefix>.m<digest of the parts' ids>`: the same parts always merge to the
    same id, so a retried merged batch is still recognised as a duplicate.
    """
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([p.ids for p in parts])
    _, last = np.unique(ids[::-1], return_index=True)
    keep = np.sort(ids.shape[0] - 1 - last)

    def joined(name: str) -> npt.NDArray[np.float32] | None:
        arrays = [getattr(p, name) for p in parts]
        if arrays[0] is None:
            return None
        out: npt.NDArray[np.float32] = np.concatenate(arrays)[keep]
        return out

    digest = hashlib.sha256("\n".join(p.batch_id for p in parts).encode()).hexdigest()[:24]
    return ReportBatch(
        batch_id=f"{prefix}.m{digest}",
        ids=ids[keep],
        loss=joined("loss"),
        importance=joined("importance"),
        embeddings=joined("embeddings"),
        round=parts[0].round,
        step=max(p.step for p in parts),
    )


def to_numpy(values: Any) -> Any:
    """A numpy view of torch tensors (any device, any float width) and array-likes."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.float()  # bfloat16 has no numpy dtype
        return values.numpy()
    return values


def as_vector(values: Any, dtype: type[np.generic], name: str, length: int | None = None) -> Any:
    """An owned 1-D copy in `dtype`; ValueError naming `name` if the shape is wrong."""
    arr = np.array(to_numpy(values), dtype=dtype, copy=True)
    if arr.ndim != 1:
        raise ValueError(
            f"{name}: expected one value per sample (1-D), got shape {list(arr.shape)}"
        )
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name}: has {arr.shape[0]} values for {length} indices; pass one each")
    return arr

"""Read-only views for the dashboard: one sample over the rounds, a round's statistics, and a
2-D projection of the embeddings. Nothing here writes; all of it runs off the event loop."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_proto.frames import encode_frame
from grace_proto.models import (
    EstimateSummary,
    HistogramModel,
    NeighborEntry,
    QuantileSummary,
    RoundStatsResponse,
    SampleResponse,
    SampleRoundEntry,
    StratumShare,
)
from grace_selection.adapters.ports import ScoreStore
from grace_selection.core.projection import project_for_map
from grace_selection.core.round_diff import compute_utility
from grace_selection.core.score_summary import (
    StratumQuantiles,
    histogram_by_group,
    quantiles_by_stratum,
)
from grace_selection.core.scores import NEVER_SCORED
from grace_selection.service.errors import InvalidInputError
from grace_selection.service.jobs import Job
from grace_selection.service.rounds import RoundData

HISTORY_ROUNDS = 100  # newest rounds listed in a sample's history
TEXT_CHARS = 4000


def describe_sample(job: Job, store: ScoreStore, sample_id: int) -> SampleResponse:
    if not 0 <= sample_id < job.spec.n:
        raise InvalidInputError(
            f"sample {sample_id} is out of range; ids are 0..{job.spec.n - 1}", field="sample_id"
        )
    arrays = job.arrays
    ids = np.array([sample_id], dtype=np.int64)
    rounds = job.rounds.numbers()[-HISTORY_ROUNDS:]
    history: list[SampleRoundEntry] = []
    for r in rounds:
        data = job.rounds.data(r, store)
        member = bool(data.in_coreset(ids)[0])
        weight = None
        if member and data.weights is not None:
            weight = float(data.weights[int(np.searchsorted(data.indices, sample_id))])
        values = store.read_round_values(job.job_id, r, "importance", ids)
        estimated = store.read_round_values(job.job_id, r, "estimated", ids)
        history.append(
            SampleRoundEntry(
                round=r,
                in_coreset=member,
                importance=_finite(values[0]) if values is not None else None,
                weight=weight,
                estimated=None if estimated is None else bool(estimated[0]),
            )
        )
    scored_round = int(arrays.scored_round[sample_id])
    return SampleResponse(
        job_id=job.job_id,
        sample_id=sample_id,
        stratum=None if arrays.strata is None else int(arrays.strata[sample_id]),
        text=read_text(job, sample_id),
        loss=_finite(arrays.loss[sample_id]),
        importance=_finite(arrays.importance[sample_id]),
        scored_round=None if scored_round == NEVER_SCORED else scored_round,
        history=history,
        neighbors=_neighbors(job, store, sample_id),
    )


def _neighbors(job: Job, store: ScoreStore, sample_id: int) -> list[NeighborEntry]:
    graph = job.keeper.graph
    if graph is None:
        return []
    row = graph.neighbors[sample_id]
    real = row >= 0
    ids = row[real].astype(np.int64)
    sims = graph.similarities[sample_id][real]
    latest = job.rounds.latest
    data = job.rounds.data(latest, store) if latest is not None else None
    importance = data.importance if data is not None and data.importance is not None else None
    member = data.in_coreset(ids) if data is not None else np.zeros(ids.shape, dtype=bool)
    source = importance if importance is not None else job.arrays.importance
    estimated = data.estimated if data is not None and importance is not None else None
    return [
        NeighborEntry(
            sample_id=int(i),
            similarity=float(s),
            importance=_finite(source[i]),
            in_coreset=bool(m),
            estimated=None if estimated is None else bool(estimated[i]),
        )
        for i, s, m in zip(ids, sims, member, strict=True)
    ]


def describe_round(job: Job, store: ScoreStore, round_: int, bins: int) -> RoundStatsResponse:
    if not 1 <= bins <= 1000:
        raise InvalidInputError(f"must be in 1..1000, got {bins}", field="bins")
    manifest = job.rounds.published(round_).manifest
    data = job.rounds.data(round_, store)
    importance = data.importance if data.importance is not None else job.arrays.importance
    loss = data.loss if data.loss is not None else job.arrays.loss
    utility = compute_utility(data.as_arrays(job.spec.n), job.spec.config)
    chosen = importance[data.indices]
    finite = chosen[np.isfinite(chosen)]
    member = np.zeros(job.spec.n, dtype=np.bool_)
    member[data.indices] = True
    split = {"coreset": member, "rest": ~member}
    by_source = dict(split)
    if data.estimated is not None:
        by_source |= {"measured": ~data.estimated, "estimated": data.estimated}
    return RoundStatsResponse(
        job_id=job.job_id,
        round=round_,
        count=manifest.count,
        churn=manifest.churn,
        rescored_fraction=manifest.rescored_fraction,
        mean_importance=float(finite.mean()) if finite.size else None,
        timings=manifest.timings,
        histograms={
            "loss": _histogram(loss, split, bins),
            "importance": _histogram(importance, by_source, bins),
            "combined": _histogram(utility, split, bins, (0.0, 1.0)),
        },
        strata=_strata_shares(job, data.indices, importance, loss),
        estimates=_estimates(importance, data.estimated),
    )


def _estimates(
    importance: npt.NDArray[np.float32], estimated: npt.NDArray[np.bool_] | None
) -> EstimateSummary | None:
    if estimated is None:
        return None
    known = np.isfinite(importance)
    measured = importance[known & ~estimated]
    estimates = importance[known & estimated]
    return EstimateSummary(
        measured=int(measured.size),
        estimated=int(estimates.size),
        unknown=int(importance.size - measured.size - estimates.size),
        negative_estimates=int(np.count_nonzero(estimates < 0)),
        min_measured=float(measured.min()) if measured.size else None,
        min_estimate=float(estimates.min()) if estimates.size else None,
    )


def _strata_shares(
    job: Job,
    indices: npt.NDArray[np.int64],
    importance: npt.NDArray[np.float32],
    loss: npt.NDArray[np.float32],
) -> dict[str, StratumShare]:
    strata = job.arrays.strata
    if strata is None or indices.size == 0:
        return {}
    names = job.spec.request.stratum_names or {}
    data_counts = np.bincount(strata)
    coreset_counts = np.bincount(strata[indices], minlength=data_counts.size)
    importance_q = quantiles_by_stratum(importance, strata)
    loss_q = quantiles_by_stratum(loss, strata)
    return {
        str(s): StratumShare(
            name=names.get(s, str(s)),
            data_share=float(data_counts[s]) / strata.size,
            coreset_share=float(coreset_counts[s]) / indices.size,
            importance=_quantiles(importance_q[s]),
            loss=_quantiles(loss_q[s]),
        )
        for s in np.flatnonzero(data_counts).tolist()
    }


def _quantiles(q: StratumQuantiles) -> QuantileSummary | None:
    if q.count == 0:
        return None
    p10, p25, p50, p75, p90 = q.values
    return QuantileSummary(count=q.count, p10=p10, p25=p25, p50=p50, p75=p75, p90=p90)


def _histogram(
    values: npt.NDArray[Any],
    groups: dict[str, npt.NDArray[np.bool_]],
    bins: int,
    value_range: tuple[float, float] | None = None,
) -> HistogramModel:
    h = histogram_by_group(values, groups, bins, value_range)
    return HistogramModel(
        edges=h.edges.tolist(),
        counts=h.counts.tolist(),
        groups={name: counts.tolist() for name, counts in h.groups.items()},
    )


def project(job: Job, store: ScoreStore, round_: int | None, max_points: int) -> bytes:
    """A frame of a seeded sample of embedded points: ids, xy (n, 2), importance, in_coreset,
    loss, and estimated (u1, where the round recorded it) and stratum (i4, where the job has
    strata).

    The map is the dashboard's randomized PCA (fitted on <= 20k rows); it is cached per
    (round, max_points, newest embedding), so a polling page does not refit it.
    """
    if not 1 <= max_points <= 200_000:
        raise InvalidInputError(f"must be in 1..200000, got {max_points}", field="max_points")
    r = job.rounds.latest if round_ is None else round_
    data = job.rounds.data(r, store) if r is not None else None
    version = int(job.arrays.embedding_seq.max(initial=0))
    key = (r, max_points, version)
    return job.projections.get_or_compute(key, lambda: _project(job, data, r, max_points))


def _project(job: Job, data: RoundData | None, r: int | None, max_points: int) -> bytes:
    seed = job.spec.request.seed
    rng = np.random.default_rng([seed, 0 if r is None else r + 1])
    with job.lock:  # copy only the rows shown, so the lock is held briefly
        embedded = np.flatnonzero(job.arrays.embedding_seq).astype(np.int64)
        total = int(embedded.size)
        if embedded.size > max_points:
            embedded = np.sort(rng.choice(embedded, size=max_points, replace=False))
        vectors = job.arrays.newest_rows(embedded)
    ids, xy = project_for_map(embedded, vectors, seed, max_points=max(embedded.size, 1))
    importance = (
        data.importance[ids]
        if data is not None and data.importance is not None
        else job.arrays.importance[ids]
    )
    member = data.in_coreset(ids) if data is not None else np.zeros(ids.size, dtype=bool)
    loss = data.loss if data is not None and data.loss is not None else job.arrays.loss
    arrays: dict[str, npt.NDArray[Any]] = {
        "ids": ids,
        "xy": xy.astype(np.float32),
        "importance": np.asarray(importance, dtype=np.float32),
        "in_coreset": member.astype(np.uint8),
        "loss": np.asarray(loss[ids], dtype=np.float32),
    }
    if data is not None and data.estimated is not None:
        arrays["estimated"] = data.estimated[ids].astype(np.uint8)
    if job.arrays.strata is not None:
        arrays["stratum"] = job.arrays.strata[ids].astype(np.int32)
    return encode_frame({"job_id": job.job_id, "round": r, "total": total}, arrays)


def read_text(job: Job, sample_id: int) -> str | None:
    """The "text" field of line `sample_id` of the job's JSONL text source, if it has one.

    Only a JSON object's "text" string is returned, never a raw line: the path comes from a
    client, and this must not turn into a way to read arbitrary files of the server.
    """
    source = job.spec.request.text_source
    if not source:
        return None
    path = Path(source)
    try:
        offsets = job.text_offsets(path)
        if sample_id >= offsets.size - 1:
            return None
        with path.open("rb") as fh:
            fh.seek(int(offsets[sample_id]))
            raw = fh.read(int(offsets[sample_id + 1] - offsets[sample_id]))
        record = json.loads(raw)
    except (OSError, ValueError):
        return None
    text = record.get("text") if isinstance(record, dict) else None
    return text[:TEXT_CHARS] if isinstance(text, str) else None


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None

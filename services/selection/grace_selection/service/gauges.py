"""What a job's newest round looks like, as numbers for per-job gauges (api/metrics.py).

Read at scrape time on the event loop, so nothing here does I/O: the values come from the
newest published manifest, and the per-stratum shares from that round's arrays when they are
in memory (after a restart, from its first read on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grace_selection.service.jobs import Job


@dataclass(frozen=True, slots=True)
class StratumGauge:
    stratum: int
    name: str
    coreset_share: float
    data_share: float


@dataclass(frozen=True, slots=True)
class JobGauges:
    """The newest published round of one job: its number, coreset size, churn (None for the
    first), the shares of samples scored fresh and estimated, its seconds by phase, and the
    share of each stratum in the coreset and in the data."""

    job_id: str
    round: int
    coreset_size: int
    churn: float | None
    fresh_share: float
    estimated_share: float | None
    seconds: dict[str, float]
    strata: tuple[StratumGauge, ...]
    graph_recall: float | None = None


def describe_gauges(job: Job) -> JobGauges | None:
    """The job's gauges, None before its first published round."""
    latest = job.rounds.latest
    if latest is None:
        return None
    manifest = job.rounds.manifest(latest)
    timings = manifest.timings
    return JobGauges(
        job_id=job.job_id,
        round=latest,
        coreset_size=manifest.count,
        churn=manifest.churn,
        fresh_share=manifest.rescored_fraction,
        estimated_share=manifest.estimated_fraction,
        seconds={
            "graph": timings.graph_seconds,
            "select": timings.select_seconds,
            "total": timings.total_seconds,
        },
        strata=_strata(job, latest),
        graph_recall=manifest.graph_recall,
    )


def _strata(job: Job, round_: int) -> tuple[StratumGauge, ...]:
    strata = job.arrays.strata
    data = job.rounds.cached(round_)
    if strata is None or data is None or data.indices.size == 0:
        return ()
    names = job.spec.request.stratum_names or {}
    in_data = np.bincount(strata)
    in_coreset = np.bincount(strata[data.indices], minlength=in_data.size)
    return tuple(
        StratumGauge(
            stratum=s,
            name=str(names.get(s, s)),
            coreset_share=float(in_coreset[s]) / data.indices.size,
            data_share=float(in_data[s]) / strata.size,
        )
        for s in np.flatnonzero(in_data).tolist()
    )

"""Prometheus metrics with one registry per app (never the global one), and the middleware
that times every request by its route template.

Names (docs/operations.md explains them): grace_ingest_samples_total{kind,source},
grace_ingest_bytes_total{kind}, grace_ingest_batches_total{kind,outcome},
grace_rounds_total{outcome}, grace_selection_seconds, grace_graph_seconds, grace_jobs,
grace_jobs_failed, grace_http_request_seconds{method,route,status}; and per job, from its newest
published round: grace_job_round, grace_job_coreset_size, grace_job_churn,
grace_job_fresh_share, grace_job_estimated_share, grace_job_round_seconds{phase},
grace_job_graph_recall,
grace_job_stratum_coreset_share{stratum,name}, grace_job_stratum_data_share{stratum,name}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grace_proto.models import RoundManifest
from grace_selection.service.gauges import JobGauges

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


GaugeSource = Callable[[], tuple[list[JobGauges], int]]


class ServiceMetrics:
    """Implements ServiceEvents by counting into a private CollectorRegistry."""

    def __init__(
        self, job_count: Callable[[], int] | None = None, gauges: GaugeSource | None = None
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingest_samples = Counter(
            "grace_ingest_samples", "Samples applied by ingest", ["kind", "source"], registry=r
        )
        self.ingest_bytes = Counter(
            "grace_ingest_bytes", "Request body bytes of ingest batches", ["kind"], registry=r
        )
        self.ingest_batches = Counter(
            "grace_ingest_batches", "Ingest batches by outcome", ["kind", "outcome"], registry=r
        )
        self.rounds = Counter("grace_rounds", "Rounds by outcome", ["outcome"], registry=r)
        self.selection_seconds = Histogram(
            "grace_selection_seconds",
            "Wall time of a round from start to publish-ready",
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.graph_seconds = Histogram(
            "grace_graph_seconds", "k-NN graph update per round", buckets=_ROUND_BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            "grace_http_request_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        jobs = Gauge("grace_jobs", "Jobs held by this process", registry=r)
        if job_count is not None:
            jobs.set_function(lambda: float(job_count()))
        if gauges is not None:
            r.register(JobCollector(gauges))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        data: bytes = generate_latest(self.registry)
        return data

    # ServiceEvents
    def batch_ingested(
        self, kind: str, source: str | None, samples: int, nbytes: int, duplicate: bool
    ) -> None:
        self.ingest_batches.labels(kind, "duplicate" if duplicate else "applied").inc()
        self.ingest_bytes.labels(kind).inc(nbytes)
        if samples:
            self.ingest_samples.labels(kind, source or "-").inc(samples)

    def round_published(self, manifest: RoundManifest) -> None:
        self.rounds.labels("published").inc()
        self.selection_seconds.observe(manifest.timings.total_seconds)
        self.graph_seconds.observe(manifest.timings.graph_seconds)

    def round_failed(self, manifest: RoundManifest) -> None:
        self.rounds.labels("failed").inc()


class JobCollector:
    """Per-job gauges, read from the service at each scrape (a custom prometheus collector)."""

    def __init__(self, source: GaugeSource) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []  # the families depend on the jobs; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        jobs, failed = self.source()

        def family(name: str, doc: str, *labels: str) -> Any:
            return GaugeMetricFamily(name, doc, labels=["job", *labels])

        yield GaugeMetricFamily(
            "grace_jobs_failed", "Stored jobs that failed to load (see /readyz)", value=failed
        )
        round_ = family("grace_job_round", "Newest published round")
        size = family("grace_job_coreset_size", "Samples in the newest round's coreset")
        churn = family("grace_job_churn", "Share of the newest coreset not in the previous one")
        fresh = family("grace_job_fresh_share", "Share of samples scored fresh for the round")
        estimated = family(
            "grace_job_estimated_share", "Share of samples whose importance was estimated"
        )
        seconds = family("grace_job_round_seconds", "The newest round's seconds", "phase")
        recall = family(
            "grace_job_graph_recall", "Sampled recall@k of the newest round's refreshed graph"
        )
        in_coreset = family(
            "grace_job_stratum_coreset_share",
            "Share of the coreset in a stratum",
            "stratum",
            "name",
        )
        in_data = family(
            "grace_job_stratum_data_share", "Share of the data in a stratum", "stratum", "name"
        )
        for job in jobs:
            round_.add_metric([job.job_id], job.round)
            size.add_metric([job.job_id], job.coreset_size)
            fresh.add_metric([job.job_id], job.fresh_share)
            if job.churn is not None:
                churn.add_metric([job.job_id], job.churn)
            if job.estimated_share is not None:
                estimated.add_metric([job.job_id], job.estimated_share)
            if job.graph_recall is not None:
                recall.add_metric([job.job_id], job.graph_recall)
            for phase, value in job.seconds.items():
                seconds.add_metric([job.job_id, phase], value)
            for s in job.strata:
                labels = [job.job_id, str(s.stratum), s.name]
                in_coreset.add_metric(labels, s.coreset_share)
                in_data.add_metric(labels, s.data_share)
        yield from (round_, size, churn, fresh, estimated, seconds, recall, in_coreset, in_data)


class RequestTimer:
    """Pure ASGI middleware: latency by (method, route template, status), cheap per request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )

"""create_app(settings): the one place that wires settings, store, index, service and routes.

Nothing is built at import time. The store, the index factory and the service are made inside
the lifespan; the job state is loaded on a background thread so that /healthz answers at once
and /readyz turns ready when the state is back.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi

from grace_proto.models import ScoreBatchRequest
from grace_selection import __version__
from grace_selection.adapters.ports import NeighborIndex, ScoreStore, ShardedIndex
from grace_selection.api.auth import TokenGuard
from grace_selection.api.errors import UnexpectedErrorGuard, install_error_handlers
from grace_selection.api.fast_path import IndicesFastPath
from grace_selection.api.limits import BodyLimit
from grace_selection.api.metrics import RequestTimer, ServiceMetrics
from grace_selection.api.routes import health, ingest, inspection, jobs, rounds
from grace_selection.dashboard.router import create_dashboard_router
from grace_selection.service.gauges import JobGauges
from grace_selection.service.keeper_types import IndexFactory
from grace_selection.service.registry import SelectionService
from grace_selection.service.resources import fix_mmap_threshold
from grace_selection.settings import ServiceSettings

TITLE = "GRACE coreset service"


def open_store(settings: ServiceSettings) -> ScoreStore:
    """Redis when GRACE_STORE is a redis:// URL, else the embedded file store in data_dir."""
    if settings.uses_redis:
        from grace_selection.adapters.redis_store import RedisScoreStore

        return RedisScoreStore(settings.store)
    from grace_selection.adapters.local_store import LocalScoreStore

    return LocalScoreStore(settings.data_dir / "store")


def make_index_factory(
    kind: str,
    *,
    vector_dtype: str = "float32",
    device: str = "cuda",
    recall_floor: float = 0.8,
    recall_target: float = 0.92,
    keep_index: bool = False,
    build_parts: int = 0,
) -> IndexFactory:
    """The NeighborIndex adapter GRACE_INDEX names (hnsw: approximate, brute: exact; torch and
    faiss: exact on GRACE_INDEX_DEVICE, checked here so that a missing GPU fails at start), and
    how the graph keeper stores its vectors (GRACE_GRAPH_VECTORS) and the recall below which it
    rebuilds (GRACE_GRAPH_RECALL_FLOOR), or joins every row again (GRACE_GRAPH_RECALL_TARGET), and
    whether it keeps the build's index for re-queries (GRACE_GRAPH_KEEP_INDEX) or builds in
    parts, one index at a time (GRACE_GRAPH_BUILD_PARTS)."""
    # Two parts by default: round 0 of a 1M x 384 job under 2x its raw vectors (one index:
    # 2.45x), 8% slower at 1M and 19% at 100k (docs/results/round.md). IndexFactory refuses
    # keep_index with more than one part.
    build_parts = build_parts or (1 if keep_index else 2)
    if kind in ("torch", "faiss"):
        from grace_selection.adapters.device_index import DeviceExactIndex, import_backend

        backend: Literal["torch", "faiss"] = "torch" if kind == "torch" else "faiss"
        import_backend(backend, device)

        def create_exact(dim: int) -> NeighborIndex:
            return DeviceExactIndex(dim, backend, device)

        def load_exact(path: Path) -> NeighborIndex:
            return DeviceExactIndex.load(path, backend, device)

        return IndexFactory(
            kind,
            create_exact,
            load_exact,
            vector_dtype,
            recall_floor,
            recall_target,
            keep_index,
            build_parts,
        )
    if kind == "brute":
        from grace_selection.adapters.brute_force_index import BruteForceIndex

        def create_brute(dim: int) -> NeighborIndex:
            return BruteForceIndex(dim)

        return IndexFactory(
            "brute",
            create_brute,
            BruteForceIndex.load,
            vector_dtype,
            recall_floor,
            recall_target,
            keep_index,
            build_parts,
        )
    from grace_selection.adapters.hnsw_index import HnswNeighborIndex

    def create_hnsw(dim: int) -> NeighborIndex:
        return HnswNeighborIndex(dim)

    return IndexFactory(
        "hnsw",
        create_hnsw,
        HnswNeighborIndex.load,
        vector_dtype,
        recall_floor,
        recall_target,
        keep_index,
        build_parts,
    )


def make_sharded_index(settings: ServiceSettings) -> Callable[[int], ShardedIndex] | None:
    """How each job makes its ShardedIndex (GRACE_SHARDS, GRACE_SHARD_BACKEND); None for the
    one-process path. For Ray, joins the cluster RAY_ADDRESS names or starts a local one here,
    at start-up, so that a missing extra or an unreachable cluster fails the start, not a
    round."""
    shards = settings.shards
    if shards == 0:
        return None
    if settings.shard_backend == "local":
        from grace_selection.adapters.sharded_index import LocalShardedIndex

        def local(dim: int) -> ShardedIndex:
            return LocalShardedIndex(dim, shards)

        return local
    from grace_selection.adapters.ray_shards import RayShardedIndex, import_ray

    ray = import_ray()
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS when set, else a local cluster

    def on_ray(dim: int) -> ShardedIndex:
        return RayShardedIndex(dim, shards)

    return on_ray


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    settings.check_bind_safety()
    metrics_holder: dict[str, SelectionService] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        fix_mmap_threshold()  # large arrays go back to the system when freed (resources.py)
        store = await run_in_threadpool(open_store, settings)
        sharded = await run_in_threadpool(make_sharded_index, settings)
        service = SelectionService(
            store,
            make_index_factory(
                settings.index,
                vector_dtype=settings.graph_vectors,
                device=settings.index_device,
                recall_floor=settings.graph_recall_floor,
                recall_target=settings.graph_recall_target,
                keep_index=settings.graph_keep_index,
                build_parts=settings.graph_build_parts,
            ),
            Path(settings.data_dir),
            events=metrics,
            max_job_bytes=settings.max_job_bytes,
            round_nice=settings.round_nice,
            make_sharded_index=sharded,
        )
        app.state.service = metrics_holder["service"] = service
        loader = threading.Thread(target=service.load, name="grace-load", daemon=True)
        loader.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.close)  # also stops a loader waiting for the store
            await run_in_threadpool(loader.join, 30)

    def job_count() -> int:
        service = metrics_holder.get("service")
        return 0 if service is None else service.job_count()

    def job_gauges() -> tuple[list[JobGauges], int]:
        service = metrics_holder.get("service")
        return ([], 0) if service is None else service.gauges()

    metrics = ServiceMetrics(job_count, job_gauges)
    app = FastAPI(
        title=TITLE,
        version=__version__,
        description="Dynamic coreset selection for training: see proto/API.md.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.guard = TokenGuard(settings.token, settings.reads_require_token)
    install_error_handlers(app)
    for module in (health, jobs, ingest, rounds, inspection):
        app.include_router(module.router)
    app.include_router(create_dashboard_router(reads_require_token=settings.reads_require_token))
    # Added last = outermost: the timer sees every request, including refused bodies; the guard
    # turns what escapes everything else into a 500 that keeps the connection open.
    app.add_middleware(IndicesFastPath, state=app.state)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestTimer, metrics=metrics)
    app.add_middleware(UnexpectedErrorGuard)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, plus the JSON schema of bodies that routes read by hand."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        extra = ScoreBatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in extra.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault("ScoreBatchRequest", extra)
        app.openapi_schema = schema
    return app.openapi_schema

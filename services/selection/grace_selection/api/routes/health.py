"""Liveness, readiness and Prometheus metrics; open without a token (operators' probes)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from grace_proto.models import HealthResponse
from grace_selection.api.deps import Service, make_json_response
from grace_selection.api.metrics import CONTENT_TYPE, ServiceMetrics

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", response_model=HealthResponse)
async def healthz() -> Response:
    return make_json_response(HealthResponse(status="ok"))


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=HealthResponse,
    responses={
        200: {"description": "ready; `job:<id>` checks list jobs that failed to load"},
        503: {"model": HealthResponse, "description": "not ready; checks say why"},
    },
)
async def readyz(service: Service) -> Response:
    ready, checks = await run_in_threadpool(service.readiness)
    answer = HealthResponse(status="ok" if ready else "unavailable", checks=checks)
    return make_json_response(answer, 200 if ready else 503)


@router.get("/metrics", operation_id="metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry: ServiceMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)

"""Jobs: create, read, list, delete; and the checkpoint a round should be scored with."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from grace_proto.models import (
    CheckpointInfo,
    CheckpointRequest,
    CreateJobRequest,
    ErrorResponse,
    JobListResponse,
    JobResponse,
)
from grace_selection.api.auth import READ, WRITE
from grace_selection.api.deps import (
    FAILED_JOB,
    MALFORMED_JSON,
    UNAUTHORIZED,
    JobId,
    Service,
    make_json_response,
)

router = APIRouter(tags=["jobs"], responses={422: {"model": ErrorResponse}, **UNAUTHORIZED})


@router.post(
    "/v1/jobs",
    operation_id="create_job",
    status_code=201,
    response_model=JobResponse,
    dependencies=WRITE,
    responses={
        200: {"model": JobResponse, "description": "identical job already exists"},
        409: {"model": ErrorResponse, "description": "`job_exists` with another spec"},
        422: {
            "model": ErrorResponse,
            "description": "a value is wrong; `job_too_large` when n_samples x dim needs more "
            "memory than GRACE_MAX_JOB_BYTES (extra: needed_bytes, limit_bytes)",
        },
        **MALFORMED_JSON,
    },
)
async def create_job(request: CreateJobRequest, service: Service) -> Response:
    job, created = await run_in_threadpool(service.create_job, request)
    return make_json_response(job, 201 if created else 200)


@router.get("/v1/jobs", operation_id="list_jobs", response_model=JobListResponse, dependencies=READ)
async def list_jobs(service: Service) -> Response:
    return make_json_response(await run_in_threadpool(service.list_jobs))


@router.get(
    "/v1/jobs/{job}",
    operation_id="get_job",
    response_model=JobResponse,
    dependencies=READ,
    responses={404: {"model": ErrorResponse}, **FAILED_JOB},
)
async def get_job(job: JobId, service: Service) -> Response:
    return make_json_response(await run_in_threadpool(service.job_response, job))


@router.delete(
    "/v1/jobs/{job}",
    operation_id="delete_job",
    status_code=204,
    dependencies=WRITE,
    responses={404: {"model": ErrorResponse}},
)
async def delete_job(job: JobId, service: Service) -> Response:
    await run_in_threadpool(service.delete_job, job)
    return Response(status_code=204)


@router.put(
    "/v1/jobs/{job}/checkpoint",
    operation_id="put_checkpoint",
    response_model=CheckpointInfo,
    dependencies=WRITE,
    responses={404: {"model": ErrorResponse}, **FAILED_JOB, **MALFORMED_JSON},
)
async def put_checkpoint(job: JobId, request: CheckpointRequest, service: Service) -> Response:
    return make_json_response(await run_in_threadpool(service.put_checkpoint, job, request))


@router.get(
    "/v1/jobs/{job}/checkpoint",
    operation_id="get_checkpoint",
    response_model=CheckpointInfo,
    dependencies=READ,
    responses={404: {"model": ErrorResponse}},
)
async def get_checkpoint(job: JobId, service: Service) -> Response:
    return make_json_response(service.get_checkpoint(job))

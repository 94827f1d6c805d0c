"""`/v1/jobs`: submit a job, read it back."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import UUID

import redis
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError

from api.auth import tenant_of
from shared import metrics
from shared.queue import enqueue
from shared.schema import Job, JobRequest, JobStatus

router = APIRouter(prefix="/v1")


@router.post("/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=Job,
             responses={422: {"description": "invalid request; `detail` names each field at fault"},
                        503: {"description": "the queue cannot be reached; nothing was queued"}})
def create_job(body: JobRequest, request: Request, response: Response, tenant: str = Depends(tenant_of)) -> Job:
    state = request.app.state
    model = body.model or state.settings.model
    if model not in state.settings.models:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "model"), "input": body.model,
                                       "msg": f"model {model!r} is not served here; choose one of {state.settings.models}"}])
    job = Job.new(body, state.settings.model, tenant)
    try:
        enqueue(job, state.store, state.publisher, state.settings.queue)
    except (redis.RedisError, OSError) as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"queue unavailable: {e}") from e
    metrics.JOBS_ENQUEUED.labels(job.model).inc()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


def _own_job(job_id: UUID, request: Request, tenant: str) -> Job:
    job = request.app.state.store.get(job_id)
    if job is None or job.tenant != tenant:  # another tenant's job is reported as absent, not forbidden
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"description": "no such job"}})
def get_job(job_id: UUID, request: Request, tenant: str = Depends(tenant_of)) -> Job:
    return _own_job(job_id, request, tenant)


@router.delete("/jobs/{job_id}", response_model=Job,
               responses={404: {"description": "no such job"}, 409: {"description": "the job already ended"}})
def cancel_job(job_id: UUID, request: Request, tenant: str = Depends(tenant_of)) -> Job:
    """Cancels a job: a queued one never runs; a running one stops at its next step and writes nothing."""
    job = _own_job(job_id, request, tenant)
    cancelled = job.model_copy(update={"status": JobStatus.cancelled, "finished_at": datetime.now(timezone.utc),
                                       "error": "cancelled by the client"})
    if job.status.terminal or not request.app.state.store.update(cancelled):
        current = request.app.state.store.get(job_id) or job
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is already {current.status.value}")
    return cancelled

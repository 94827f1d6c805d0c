"""`/v1/jobs`: submit a job, read it back with links to its images, cancel it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import redis
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status

from genfleet.api.admission import check_model, check_webhook, idempotent
from genfleet.api.auth import Caller, caller
from genfleet.shared import metrics
from genfleet.shared.queue import enqueue
from genfleet.shared.schema import Job, JobRequest, JobStatus

router = APIRouter(prefix="/v1", tags=["jobs"])
log = logging.getLogger(__name__)

IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=255,
                                              description="repeat a POST safely: same key and body, same result")]
_LIMITS = {401: {"description": "missing or invalid API key"},
           409: {"description": "a request with this Idempotency-Key is still in progress"},
           422: {"description": "invalid request; `detail` names each field at fault"},
           429: {"description": "rate limit or quota exceeded; see Retry-After"},
           503: {"description": "the queue is too deep or unreachable; nothing was queued; see Retry-After"}}


def with_links(job: Job, request: Request) -> Job:
    """The record with a download link on each image: presigned (S3, bounded expiry) or a local path."""
    if not job.outputs:
        return job
    storage, expiry = request.app.state.storage, request.app.state.settings.presign_expiry_s
    outputs = [o.model_copy(update={"download_url": storage.link(o.key, expiry)}) for o in job.outputs]
    return job.model_copy(update={"outputs": outputs})


def _queue_one(body: JobRequest, request: Request, who: Caller) -> Job:
    state = request.app.state
    state.limits.check_depth(1)
    state.limits.admit(who.key_id, body.num_images)
    job = Job.new(body, state.settings.model, who.tenant)
    try:
        enqueue(job, state.store, state.publisher, state.settings.queue)
    except (redis.RedisError, OSError) as e:
        state.limits.refund(who.key_id, body.num_images)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"queue unavailable: {e}",
                            headers={"Retry-After": "5"}) from e
    metrics.JOBS_ENQUEUED.labels(job.model, body.priority.value).inc()
    log.info("job queued", extra={"job_id": str(job.id), "tenant": who.tenant, "model": job.model,
                                  "priority": body.priority.value})
    return job


@router.post("/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=Job, responses=_LIMITS)
def create_job(body: JobRequest, request: Request, response: Response, who: Caller = Depends(caller),
               idempotency_key: IdempotencyKey = None) -> Job:
    """Queues one job. With an `Idempotency-Key`, a retried request returns the same job and queues nothing."""
    check_model(body.model, request.app.state.settings)
    check_webhook(body.webhook_url, request.app.state.settings)
    job_id, job = idempotent(request, who, idempotency_key, body.model_dump_json(),
                             lambda: _queue_one(body, request, who))
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    if job is None:  # a replay: the job as it stands now
        response.headers["Idempotent-Replayed"] = "true"
        job = own_job(UUID(job_id), request, who)
    return with_links(job, request)


def own_job(job_id: UUID, request: Request, who: Caller) -> Job:
    job = request.app.state.store.get(job_id)
    if job is None or job.tenant != who.tenant:  # another tenant's job is reported as absent, not forbidden
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"description": "no such job"}})
def get_job(job_id: UUID, request: Request, who: Caller = Depends(caller)) -> Job:
    return with_links(own_job(job_id, request, who), request)


@router.delete("/jobs/{job_id}", response_model=Job,
               responses={404: {"description": "no such job"}, 409: {"description": "the job already ended"}})
def cancel_job(job_id: UUID, request: Request, who: Caller = Depends(caller)) -> Job:
    """Cancels a job: a queued one never runs; a running one stops at its next step and writes nothing."""
    state = request.app.state
    job = own_job(job_id, request, who)
    cancelled = job.model_copy(update={"status": JobStatus.cancelled, "finished_at": datetime.now(UTC),
                                       "error": "cancelled by the client"})
    written = state.store.update(cancelled) if not job.status.terminal else None
    if not written:
        current = state.store.get(job_id) or job
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is already {current.status.value}")
    state.outcomes(cancelled, written)
    return cancelled

"""`/v1/jobs`: submit a job, read it back with links to its images, cancel it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from genfleet.api.admission import admit, check_model, check_webhook, idempotent
from genfleet.api.auth import Caller, Who, owned
from genfleet.api.inputs import resolve
from genfleet.api.state import AppState, State
from genfleet.shared import metrics
from genfleet.shared.queue import enqueue, model_queues, queue_for
from genfleet.shared.schema import Job, JobRequest, JobStatus, OutputFormat, Task

router = APIRouter(prefix="/v1", tags=["jobs"])
log = logging.getLogger(__name__)

IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=255,
                                              description="repeat a POST safely: same key and body, same result")]
LIMITS: dict[int | str, dict[str, Any]] = {401: {"description": "missing or invalid API key"},
           409: {"description": "a request with this Idempotency-Key is still in progress"},
           422: {"description": "invalid request; `detail` names each field at fault"},
           429: {"description": "rate limit or quota exceeded; see Retry-After"},
           503: {"description": "the queue is too deep or unreachable; nothing was queued; see Retry-After"}}


def with_links(job: Job, state: State) -> Job:
    """The record with a download link on each image: presigned (S3, bounded expiry) or a local path."""
    if not job.outputs:
        return job
    expiry = state.settings.presign_expiry_s
    outputs = [o.model_copy(update={"download_url": state.storage.link(o.key, expiry)}) for o in job.outputs]
    return job.model_copy(update={"outputs": outputs})


def as_json(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A record serialised once, by pydantic; returned as is, FastAPI would first validate it again against the
    route's response model (a tenth of a fast POST's time)."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")


async def queue_one(body: JobRequest, model: str, state: State, who: Caller) -> Job:
    """Admits, records and publishes one job: the one way a single job reaches the queue."""
    if body.task is not Task.text_to_image:  # its input images are read from storage: blocking, off the loop
        body = await run_in_threadpool(resolve, body, model, state, who)
    job = Job.new(body, state.settings.model, who.tenant)
    settings = state.settings
    queue, counted = queue_for(settings, job.model), model_queues(settings)
    await admit(state, who, 1, body.num_images, bounded=True, queue=lambda: enqueue(
        job, state.store, state.aredis, state.publisher, queue, settings.max_queue_depth, counted))
    metrics.JOBS_ENQUEUED.labels(job.model, body.priority.value).inc()
    log.info("job queued", extra={"job_id": str(job.id), "tenant": who.tenant, "model": job.model,
                                  "priority": body.priority.value})
    return job


@router.post("/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=Job, responses=LIMITS)
async def create_job(body: JobRequest, request: Request, state: AppState, who: Who,
                     idempotency_key: IdempotencyKey = None) -> Response:
    """Queues one job. With an `Idempotency-Key`, a retried request returns the same job and queues nothing."""
    model = check_model(body, state.settings)
    check_webhook(body.webhook_url, state.settings)
    # on the event loop: admission and the record-and-publish step are async Redis calls
    job_id, job = await idempotent(state, request, who, idempotency_key, body.model_dump_json,
                                   lambda: queue_one(body, model, state, who))
    headers = {"Location": f"/v1/jobs/{job_id}"}
    if job is None:  # a replay: the job as it stands now
        headers["Idempotent-Replayed"] = "true"
        job = await run_in_threadpool(lambda: owned(state.store.get(job_id), who, "job", UUID(job_id)))
    return as_json(with_links(job, state), status.HTTP_202_ACCEPTED, headers)


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"description": "no such job"}})
def get_job(job_id: UUID, state: AppState, who: Who) -> Job:
    return with_links(owned(state.store.get(job_id), who, "job", job_id), state)


@router.get("/jobs/{job_id}/images/{index}", response_class=Response,
            responses={200: {"content": {f.content_type: {} for f in OutputFormat}, "description": "the image"},
                       404: {"description": "no such job or image"}})
def get_image(job_id: UUID, index: int, state: AppState, who: Who) -> Response:
    """One image, through the API: for clients that cannot reach the storage (a local folder) or hold no link."""
    job = owned(state.store.get(job_id), who, "job", job_id)
    output = next((o for o in job.outputs if o.index == index), None)
    if output is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no image {index}")
    # private: the caller's key authorised it; immutable: a stored image is never rewritten
    return Response(state.storage.get(output.key), media_type=job.request.output_format.content_type,
                    headers={"Cache-Control": "private, max-age=86400, immutable"})


@router.delete("/jobs/{job_id}", response_model=Job,
               responses={404: {"description": "no such job"}, 409: {"description": "the job already ended"}})
def cancel_job(job_id: UUID, state: AppState, who: Who) -> Job:
    """Cancels a job: a queued one never runs; a running one stops at its next step and writes nothing."""
    job = owned(state.store.get(job_id), who, "job", job_id)
    cancelled = job.model_copy(update={"status": JobStatus.cancelled, "finished_at": datetime.now(UTC),
                                       "error": "cancelled by the client"})
    written = state.store.update(cancelled) if not job.status.terminal else None
    if not written:
        current = state.store.get(job_id) or job
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is already {current.status.value}")
    state.outcomes(cancelled, written)
    return cancelled

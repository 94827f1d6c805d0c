"""OpenAI's Images API over genfleet's jobs: `POST /v1/images/generations` and `POST /v1/images/edits`.

A thin layer: each request becomes one job (its `n` images), admitted, recorded and published by the same path
as `POST /v1/jobs` (`queue_one`: auth, quotas, rate limits, backpressure), so it shows in `/v1/jobs`, the
metrics and the web page like any other. The answer waits for the job's terminal event on its event stream, up
to GENFLEET_OPENAI_WAIT_S; past it, a 504 whose error carries the job's id (and `x-should-retry: false`, so the
SDK does not queue the work twice): the job runs on, and `GET /v1/jobs/{id}` has it. Every answer names its
job in the `x-genfleet-job-id` header.

With `stream: true` the answer is Server-Sent Events in OpenAI's form: up to `partial_images` events
`image_generation.partial_image` carrying the worker's previews (workers/previews.py; JPEG), then one
`image_generation.completed` per image.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from genfleet.api.admission import check_model, idempotent
from genfleet.api.auth import Who
from genfleet.api.jobs import IdempotencyKey, queue_one
from genfleet.api.openai_edits import edit_request
from genfleet.api.openai_errors import OpenAIError, OpenAIRoute
from genfleet.api.openai_schema import ImageGeneration, ImageRequest, job_request
from genfleet.api.state import AppState, State
from genfleet.shared import keys
from genfleet.shared.events import follow
from genfleet.shared.schema import Job, JobRequest, JobStatus

router = APIRouter(prefix="/v1/images", tags=["openai"], route_class=OpenAIRoute)
log = logging.getLogger(__name__)
JOB_HEADER = "x-genfleet-job-id"
# tokens are not what genfleet counts (its usage is accelerator seconds: `GET /v1/usage`); the SDK's type wants them
NO_TOKENS = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
             "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}}


async def _record(state: State, job_id: Any) -> Job:
    raw = await state.aredis.get(keys.job(job_id))
    if raw is None:
        raise OpenAIError(500, f"job {job_id} vanished (its record expired)", code="job_expired")
    return Job.model_validate_json(raw)


async def ended(state: State, job: Job) -> Job:
    """The job once it has ended, waiting on its event stream; past the wait, a 504 that names it."""
    wait_s = state.settings.openai_wait_s
    try:
        async with asyncio.timeout(wait_s):
            async for _ in follow(state.aredis, job.id, watching=False):
                pass
    except TimeoutError:
        now = await _record(state, job.id)
        raise OpenAIError(504, f"job {job.id} is still {now.status.value} after {wait_s:g}s; it goes on: fetch it "
                               f"from GET /v1/jobs/{job.id}", code="timeout", job_id=str(job.id),
                          headers={"x-should-retry": "false", JOB_HEADER: str(job.id),
                                   "Location": f"/v1/jobs/{job.id}"}) from None
    return await _record(state, job.id)


def _failed(job: Job) -> OpenAIError:
    status = 400 if job.status is JobStatus.cancelled else 500
    return OpenAIError(status, f"job {job.id} {job.status.value}: {job.error or 'no reason given'}",
                       code=f"job_{job.status.value}", job_id=str(job.id), headers={JOB_HEADER: str(job.id)})


async def _image(state: State, request: Request, job: Job, index: int, as_url: bool) -> dict[str, Any]:
    output = job.outputs[index]
    if not as_url:
        data = await run_in_threadpool(state.storage.get, output.key)
        return {"b64_json": base64.b64encode(data).decode(), "revised_prompt": None}
    link = state.storage.link(output.key, state.settings.presign_expiry_s)
    if not link.startswith(("http://", "https://")):  # local storage: through the API, with the same key
        link = str(request.url_for("get_image", job_id=str(job.id), index=index))
    return {"url": link, "revised_prompt": None}


async def answer(state: State, request: Request, body: ImageRequest, job: Job) -> Response:
    job = await ended(state, job)
    if job.status is not JobStatus.succeeded:
        raise _failed(job)
    data = [await _image(state, request, job, o.index, body.response_format == "url") for o in job.outputs]
    first = job.outputs[0]
    return JSONResponse({"created": int(job.created_at.timestamp()), "data": data, "background": "opaque",
                         "output_format": body.output_format.value, "size": f"{first.width}x{first.height}",
                         "quality": body.quality if body.quality in ("low", "medium", "high") else None},
                        headers={JOB_HEADER: str(job.id)})


async def stream(state: State, body: ImageRequest, job: Job, kind: str) -> AsyncIterator[dict[str, str]]:
    """`kind`: `image_generation` or `image_edit`, as OpenAI names their events."""
    common = {"background": "opaque", "quality": body.quality, "size": body.size or "auto"}
    sent = 0
    async with asyncio.timeout(state.settings.openai_wait_s):
        async for event in follow(state.aredis, job.id):
            if event.type == "preview" and sent < body.partials():
                preview = json.loads(event.data)
                yield {"event": f"{kind}.partial_image", "data": json.dumps({
                    "type": f"{kind}.partial_image", "b64_json": preview["image"], "created_at": int(time.time()),
                    "output_format": "jpeg", "partial_image_index": sent, **common})}
                sent += 1
    job = await _record(state, job.id)
    if job.status is not JobStatus.succeeded:
        failure = _failed(job)
        yield {"event": "error", "data": json.dumps({"error": {"message": failure.message, "type": "server_error",
                                                               "code": failure.code, "job_id": str(job.id)}})}
        return
    for output in job.outputs:
        data = await run_in_threadpool(state.storage.get, output.key)
        yield {"event": f"{kind}.completed", "data": json.dumps({
            "type": f"{kind}.completed", "b64_json": base64.b64encode(data).decode(), "created_at": int(time.time()),
            "output_format": body.output_format.value, "usage": NO_TOKENS,
            **common, "size": f"{output.width}x{output.height}"})}


async def submit(state: State, request: Request, who: Any, body: ImageRequest, job_body: JobRequest, kind: str,
                 idempotency_key: str | None = None) -> Response:
    """Queues the job as `POST /v1/jobs` would, then answers in OpenAI's form, whole or streamed."""
    model = check_model(job_body, state.settings)
    job_id, job = await idempotent(state, request, who, idempotency_key, job_body.model_dump_json,
                                   lambda: queue_one(job_body, model, state, who))
    if job is None:  # a replay: the same job, followed again
        job = await _record(state, job_id)
        if job.tenant != who.tenant:
            raise OpenAIError(404, f"job {job_id} not found")
    log.info("openai request", extra={"job_id": job_id, "tenant": who.tenant, "user": body.user, "kind": kind})
    if body.stream:
        return EventSourceResponse(stream(state, body, job, kind), ping=15, headers={JOB_HEADER: job_id})
    return await answer(state, request, body, job)


@router.post("/generations", responses={400: {"description": "OpenAI's error envelope, `param` naming the field"}})
async def generations(body: ImageGeneration, request: Request, state: AppState, who: Who,
                      idempotency_key: IdempotencyKey = None) -> Response:
    """OpenAI's `images.generate`: one job of `n` images."""
    job_body = job_request(body, state.settings.model, state.settings.registry)
    return await submit(state, request, who, body, job_body, "image_generation", idempotency_key)


@router.post("/edits", responses={400: {"description": "OpenAI's error envelope, `param` naming the field"}})
async def edits(request: Request, state: AppState, who: Who) -> Response:
    """OpenAI's `images.edit` (multipart): with a mask, inpainting where the mask is transparent; without,
    image-to-image."""
    body, job_body = await edit_request(request, state, who)
    return await submit(state, request, who, body, job_body, "image_edit")

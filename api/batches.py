"""`/v1/batches`: up to 10,000 prompts with shared parameters in one request, as JSON or as JSON Lines.

Accepting a batch records every job and publishes every message (kombu's pipelined producer) before it
answers, so a 202 means all of it is queued. If publishing fails half way, the batch's jobs are cancelled
before the 503, so a message that did go out finds its job cancelled and runs nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any
from uuid import UUID

import redis
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from genfleet.api.admission import Loc, admit, check_model, check_webhook, idempotent, invalid
from genfleet.api.auth import Caller, Who, owned
from genfleet.api.inputs import resolve
from genfleet.api.jobs import LIMITS, IdempotencyKey
from genfleet.api.state import AppState, State
from genfleet.shared import metrics
from genfleet.shared.batches import Batch, BatchItem, BatchRequest, new_jobs
from genfleet.shared.queue import publish
from genfleet.shared.schema import Job

router = APIRouter(prefix="/v1", tags=["batches"])
log = logging.getLogger(__name__)
JSONL = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
_ITEM = TypeAdapter(str | BatchItem)

_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}},
    "application/x-ndjson": {"schema": {"type": "string"},
                             "example": '"a green cat"\n{"prompt": "a red hat", "seed": 3}\n'},
}}}


def schemas() -> dict[str, Any]:
    """Component schemas the JSON body refers to (the route reads its body itself, so FastAPI adds none)."""
    schema = BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), "BatchRequest": schema}


def _errors(e: ValidationError, prefix: Loc) -> RequestValidationError:
    return RequestValidationError([{**err, "loc": (*prefix, *err["loc"])} for err in e.errors(include_url=False)])


def _from_jsonl(raw: bytes, params: str | None, webhook_url: str | None) -> BatchRequest:
    items = []
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(_ITEM.validate_json(line))
        except ValidationError as e:
            raise _errors(e, ("body", f"line {n}")) from None
    try:
        return BatchRequest(prompts=items, params=json.loads(params) if params else {}, webhook_url=webhook_url)
    except json.JSONDecodeError as e:
        raise invalid(("query", "params"), params, f"not JSON: {e}") from None
    except ValidationError as e:
        raise _errors(e, ("body",)) from None


async def _read(request: Request, params: str | None, webhook_url: str | None) -> BatchRequest:
    raw = await request.body()
    if request.headers.get("content-type", "").split(";")[0].strip() in JSONL:
        return _from_jsonl(raw, params, webhook_url)
    try:
        return BatchRequest.model_validate_json(raw)
    except ValidationError as e:
        raise _errors(e, ("body",)) from None


def _prepare(body: BatchRequest, state: State, who: Caller) -> tuple[Batch, list[Job]]:
    """The batch and its jobs, checked (its inputs read from storage): blocking, run off the event loop."""
    model = check_model(body.params, state.settings, ("body", "params"))
    check_webhook(body.webhook_url, state.settings)
    body = body.model_copy(update={"params": resolve(body.params, model, state, who, ("body", "params"))})
    batch = Batch(tenant=who.tenant, model=model, total=len(body.prompts), webhook_url=body.webhook_url)
    try:
        return batch, new_jobs(batch, body, state.settings.model)
    except ValidationError as e:
        raise _errors(e, ("body", "params")) from None


async def _queue_batch(body: BatchRequest, state: State, who: Caller) -> Batch:
    batch, jobs = await run_in_threadpool(_prepare, body, state, who)

    def queue() -> None:
        state.batches.create(batch, jobs)
        publish(jobs, state.store, state.publisher, state.settings)

    def undo() -> None:
        try:
            state.batches.cancel_queued(batch)
        except redis.RedisError:
            log.exception("batch %s: publishing failed and so did cancelling its jobs", batch.id)

    await admit(state, who, len(jobs), sum(j.request.num_images for j in jobs),
                lambda: run_in_threadpool(queue), lambda: run_in_threadpool(undo))
    metrics.BATCHES_ENQUEUED.inc()
    metrics.JOBS_ENQUEUED.labels(batch.model, body.params.priority.value).inc(len(jobs))
    log.info("batch queued", extra={"batch_id": str(batch.id), "tenant": who.tenant, "jobs": len(jobs)})
    return batch


@router.post("/batches", status_code=status.HTTP_202_ACCEPTED, response_model=Batch, responses=LIMITS,
             openapi_extra=_BODY)
async def create_batch(request: Request, response: Response, state: AppState, who: Who,
                       idempotency_key: IdempotencyKey = None,
                       params: Annotated[str | None, Query(description="JSON Lines only: the shared parameters, "
                                                                       "as a JSON object")] = None,
                       webhook_url: Annotated[str | None, Query(description="JSON Lines only")] = None) -> Batch:
    """Queues up to 10,000 prompts. JSON: a `BatchRequest`. JSON Lines: one prompt a line (a JSON string or
    `{"prompt", "negative_prompt", "seed"}`), shared parameters in the `params` query parameter."""
    body = await _read(request, params, webhook_url)
    batch_id, made = await idempotent(state, request, who, idempotency_key, body.model_dump_json,
                                      lambda: _queue_batch(body, state, who))
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    if made is None:
        response.headers["Idempotent-Replayed"] = "true"
    return await run_in_threadpool(_view, UUID(batch_id), state, who)


def _view(batch_id: UUID, state: State, who: Caller) -> Batch:
    """The batch with its counts; once finished, a link to its manifest (written here if its writer died)."""
    batch = owned(state.batches.get(batch_id), who, "batch", batch_id)
    if batch.status != "finished":
        return batch
    key = state.batches.finished_manifest(batch, state.storage)
    return batch.model_copy(update={"manifest_url": state.storage.link(key, state.settings.presign_expiry_s)})


@router.get("/batches/{batch_id}", response_model=Batch, responses={404: {"description": "no such batch"}})
def get_batch(batch_id: UUID, state: AppState, who: Who) -> Batch:
    return _view(batch_id, state, who)


@router.delete("/batches/{batch_id}", response_model=Batch, responses={404: {"description": "no such batch"}})
def cancel_batch(batch_id: UUID, state: AppState, who: Who) -> Batch:
    """Cancels every job of the batch that has not started; running ones finish."""
    batch = owned(state.batches.get(batch_id), who, "batch", batch_id)
    _, finished = state.batches.cancel_queued(batch)
    if finished:
        state.outcomes.batch_finished(batch.id)
    return _view(batch_id, state, who)

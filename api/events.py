"""Progress as Server-Sent Events (sse-starlette).

`GET /v1/jobs/{id}/events` replays the job's history from Redis (or from `Last-Event-ID` on), then follows it
live, and ends after the terminal event: `queued`, `running`, `progress` ({"step", "steps"}), `preview`
({"step", "steps", "index", "image": base64 JPEG}), then `succeeded`, `failed` or `cancelled`. Status events
carry the job record as JSON. While a client listens, the job is marked watched, so its worker sends previews.

`GET /v1/batches/{id}/events` sends a `batch` event (the batch with its counts) each time its counts move, read
every half second, and ends once the batch has finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

import redis.asyncio
from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from genfleet.api.auth import Who, owned
from genfleet.api.state import AppState, State
from genfleet.shared import keys
from genfleet.shared.events import follow
from genfleet.shared.schema import Job

router = APIRouter(prefix="/v1", tags=["jobs"])
_BLOCK_MS = 10_000
_BATCH_POLL_S = 0.5  # counts move inside the job store's update script, which signals nothing; so, a read


async def _events(r: redis.asyncio.Redis, job: Job, last_event_id: str | None) -> AsyncIterator[dict[str, str]]:
    after = last_event_id or "0-0"
    if last_event_id is None and not await r.exists(keys.events(job.id)):
        # nothing has happened yet (or the history expired): the record says where the job stands
        yield {"id": "0-0", "event": job.status.value, "data": job.model_dump_json()}
        if job.status.terminal:
            return
    async for event in follow(r, job.id, after, _BLOCK_MS):
        # a preview carries no id: a client resuming from it would skip the history written meanwhile
        yield {"id": event.id, "event": event.type, "data": event.data} if event.history else \
            {"event": event.type, "data": event.data}


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the job's events"},
                       404: {"description": "no such job"}})
async def job_events(job_id: UUID, state: AppState, who: Who,
                     last_event_id: Annotated[str | None, Header(pattern=r"^\d+-\d+$")] = None) -> EventSourceResponse:
    raw = await state.aredis.get(keys.job(job_id))
    job = owned(Job.model_validate_json(raw) if raw else None, who, "job", job_id)
    return EventSourceResponse(_events(state.aredis, job, last_event_id), ping=15)


async def _batch_events(state: State, batch_id: UUID) -> AsyncIterator[dict[str, str]]:
    last = None
    while True:
        batch = await run_in_threadpool(state.batches.get, batch_id)
        if batch is None:  # expired while watched
            return
        data = batch.model_dump_json()
        if data != last:
            yield {"event": "batch", "data": data}
            last = data
        if batch.status == "finished":
            return
        await asyncio.sleep(_BATCH_POLL_S)


@router.get("/batches/{batch_id}/events", response_class=EventSourceResponse, tags=["batches"],
            responses={200: {"content": {"text/event-stream": {}}, "description": "the batch's progress"},
                       404: {"description": "no such batch"}})
async def batch_events(batch_id: UUID, state: AppState, who: Who) -> EventSourceResponse:
    owned(await run_in_threadpool(state.batches.get, batch_id), who, "batch", batch_id)
    return EventSourceResponse(_batch_events(state, batch_id), ping=15)

"""`GET /v1/jobs/{id}/events`: a job's progress as Server-Sent Events (sse-starlette).

The stream replays the job's history from Redis (or from `Last-Event-ID` on), then follows it live, and ends
after the terminal event: `queued`, `running`, `progress` ({"step", "steps"}), then `succeeded`, `failed` or
`cancelled`. Status events carry the job record as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from sse_starlette import EventSourceResponse

from genfleet.api.auth import Caller, caller
from genfleet.shared.events import stream_key, wait_next
from genfleet.shared.jobstore import job_key
from genfleet.shared.schema import Job

router = APIRouter(prefix="/v1", tags=["jobs"])
_BLOCK_MS = 10_000


async def _events(r, job: Job, last_event_id: str | None) -> AsyncIterator[dict]:
    after = last_event_id or "0-0"
    if last_event_id is None and not await r.exists(stream_key(job.id)):
        # nothing has happened yet (or the history expired): the record says where the job stands
        yield {"id": "0-0", "event": job.status.value, "data": job.model_dump_json()}
        if job.status.terminal:
            return
    while True:
        for event in await wait_next(r, job.id, after, _BLOCK_MS):
            yield {"id": event.id, "event": event.type, "data": event.data}
            after = event.id
            if event.terminal:
                return


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the job's events"},
                       404: {"description": "no such job"}})
async def job_events(job_id: UUID, request: Request, who: Caller = Depends(caller),
                     last_event_id: Annotated[str | None, Header(pattern=r"^\d+-\d+$")] = None) -> EventSourceResponse:
    r = request.app.state.aredis
    raw = await r.get(job_key(job_id))
    job = Job.model_validate_json(raw) if raw else None
    if job is None or job.tenant != who.tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return EventSourceResponse(_events(r, job, last_event_id), ping=15)

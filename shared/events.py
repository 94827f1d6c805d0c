"""A job's event history: one Redis stream a job, read by `GET /v1/jobs/{id}/events` (Server-Sent Events).

Status events (`running`, `succeeded`, `failed`, `cancelled`) are appended by the job store's update script in
the same atomic step as the status change, so the stream can never disagree with the record. `progress`
events (step n of N) come from the sampling loop at most twice a second. A stream keeps its last few dozen
events and expires with its job, so a client that connects late, or reconnects with `Last-Event-ID`, still
sees how the job ended.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis
import redis.asyncio

from genfleet.shared import keys
from genfleet.shared.schema import TERMINAL

MAXLEN = 64  # approximate (XADD MAXLEN ~): enough for every status change and the latest progress


@dataclass(frozen=True)
class Event:
    id: str  # the stream entry id: what a client sends back as Last-Event-ID
    type: str  # running | progress | succeeded | failed | cancelled (queued is synthesised from the record)
    data: str  # JSON: the job record for status events, {"step", "steps"} for progress

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


def _decode(entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> list[Event]:
    return [Event(eid.decode(), fields[b"event"].decode(), fields[b"data"].decode()) for eid, fields in entries]


def publish_progress(r: redis.Redis, job_ids: Iterable[UUID | str], step: int, steps: int, ttl_s: int) -> None:
    data = json.dumps({"step": step, "steps": steps})
    pipe = r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.xadd(keys.events(job_id), {"event": "progress", "data": data}, maxlen=MAXLEN, approximate=True)
        pipe.expire(keys.events(job_id), ttl_s)
    pipe.execute()


async def wait_next(r: redis.asyncio.Redis, job_id: UUID | str, after: str, block_ms: int) -> list[Event]:
    """New events after `after`, waiting up to `block_ms` for one (redis.asyncio client)."""
    reply: Any = await r.xread({keys.events(job_id): after}, block=block_ms)  # RESP2: [[stream, entries]]
    return _decode(reply[0][1]) if reply else []

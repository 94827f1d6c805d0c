"""A job's event history: one Redis stream a job, read by `GET /v1/jobs/{id}/events` (Server-Sent Events).

Status events (`running`, `succeeded`, `failed`, `cancelled`) are appended by the job store's update script in
the same atomic step as the status change, so the stream can never disagree with the record. `progress`
events (step n of N) come from the sampling loop at most twice a second.

`preview` events (a small JPEG of each image as it stands, workers/previews.py) come with them, for jobs that
asked or that someone listens to (a listener marks the job watched, `keys.watch`, while it listens). They are
live, not history: they go to a short stream of their own (`keys.previews`, the last few), which a listener reads
beside the history in the same XREAD. So eight images previewed twice a second never push a job's status events
out of its history, and a client resuming with `Last-Event-ID` gets the history it missed and the latest
previews, whose events carry no id. A stream keeps its last few dozen
events and expires with its job, so a client that connects late, or reconnects with `Last-Event-ID`, still
sees how the job ended.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis
import redis.asyncio

from genfleet.shared import keys
from genfleet.shared.schema import TERMINAL

MAXLEN = 64  # approximate (XADD MAXLEN ~): enough for every status change and the latest progress
PREVIEWS_MAXLEN = 32  # approximate: the latest preview of each image of a 16-image job, and the one before
WATCH_TTL_S = 30  # a listener renews its mark at least this often (the SSE route's read blocks 10 s at most)


@dataclass(frozen=True)
class Event:
    id: str  # the stream entry id: what a client sends back as Last-Event-ID (a preview's is not)
    type: str  # running | progress | preview | succeeded | failed | cancelled (queued comes from the record)
    data: str  # JSON: the job record for status events, {"step", "steps"} for progress, and for a preview
    # {"step", "steps", "index", "image"}: the job's image `index`, as a base64 JPEG

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL

    @property
    def history(self) -> bool:
        """Part of the job's history, resumable by its id (a preview is not)."""
        return self.type != "preview"


def _decode(entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> list[Event]:
    return [Event(eid.decode(), fields[b"event"].decode(), fields[b"data"].decode()) for eid, fields in entries]


def publish_progress(r: redis.Redis, job_ids: Iterable[UUID | str], step: int, steps: int, ttl_s: int) -> None:
    data = json.dumps({"step": step, "steps": steps})
    pipe = r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.xadd(keys.events(job_id), {"event": "progress", "data": data}, maxlen=MAXLEN, approximate=True)
        pipe.expire(keys.events(job_id), ttl_s)
    pipe.execute()


def publish_previews(r: redis.Redis, previews: list[tuple[str, int, str]], step: int, steps: int, ttl_s: int
                     ) -> None:
    """(job id, image index, base64 JPEG) for each image previewed at this step."""
    pipe = r.pipeline(transaction=False)
    for job_id, index, image in previews:
        data = json.dumps({"step": step, "steps": steps, "index": index, "image": image})
        pipe.xadd(keys.previews(job_id), {"event": "preview", "data": data}, maxlen=PREVIEWS_MAXLEN,
                  approximate=True)
        pipe.expire(keys.previews(job_id), ttl_s)
    pipe.execute()


def watched(r: redis.Redis, job_ids: list[str]) -> set[str]:
    """Of these jobs, those someone listens to now."""
    pipe = r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.exists(keys.watch(job_id))
    return {job_id for job_id, n in zip(job_ids, pipe.execute(), strict=True) if n}


async def watch(r: redis.asyncio.Redis, job_id: UUID | str) -> None:
    """Marks the job listened to, for the next `WATCH_TTL_S`."""
    await r.set(keys.watch(job_id), 1, ex=WATCH_TTL_S)


async def follow(r: redis.asyncio.Redis, job_id: UUID | str, after: str = "0-0", block_ms: int = 10_000,
                 watching: bool = True) -> AsyncIterator[Event]:
    """The job's events after `after`, as they come, until its terminal one. `watching`: with its previews,
    the latest few first, and the job marked listened to (so its worker sends them) while this runs."""
    history, live = keys.events(job_id), keys.previews(job_id)
    seen_preview = "0-0"
    while True:
        streams: dict[Any, Any] = {history: after}
        if watching:
            await watch(r, job_id)  # renewed at least every block_ms, well within its expiry
            streams[live] = seen_preview
        reply: Any = await r.xread(streams, block=block_ms)  # RESP2: [[stream, entries], ...]
        for stream, entries in reply or []:
            for event in _decode(entries):
                yield event
                if stream.decode() == live:
                    seen_preview = event.id
                    continue
                after = event.id
                if event.terminal:
                    return


async def wait_next(r: redis.asyncio.Redis, job_id: UUID | str, after: str, block_ms: int) -> list[Event]:
    """New events after `after`, waiting up to `block_ms` for one (redis.asyncio client)."""
    reply: Any = await r.xread({keys.events(job_id): after}, block=block_ms)  # RESP2: [[stream, entries]]
    return _decode(reply[0][1]) if reply else []

"""What every POST goes through: the model is served, the webhook target is safe; then one admission path
(queue depth, rate and quota, then record and publish; on a Redis failure the units are refunded, what was
recorded is undone and the client gets a 503), wrapped in the Idempotency-Key flow (api/idempotency.py).
Admission runs on the event loop (async Redis); blocking work (input images, a batch's thousands of records)
goes to the thread pool in the callables it is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from uuid import UUID

import redis
from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import AnyUrl

from genfleet.api.auth import Caller
from genfleet.api.idempotency import fingerprint
from genfleet.api.state import State
from genfleet.shared.errors import QueueFull, UnsafeTarget
from genfleet.shared.schema import JobParams
from genfleet.shared.settings import Settings
from genfleet.shared.webhooks import check_target

Loc = tuple[str | int, ...]


class HasId(Protocol):
    @property
    def id(self) -> UUID: ...


Made = TypeVar("Made", bound=HasId)  # a Job or a Batch


def invalid(loc: Loc, value: Any, msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "input": value, "msg": msg}])


def check_model(params: JobParams, settings: Settings, loc: Loc = ("body",)) -> str:
    """The model the job runs on (the server's default when unset), once it is served here and takes the
    job's size, scheduler, task and adapters; else 422 naming each field at fault."""
    chosen = params.model or settings.model
    if chosen not in settings.models:
        raise invalid((*loc, "model"), params.model,
                      f"model {chosen!r} is not served here; choose one of {settings.models}")
    misfits = [*settings.registry.spec(chosen).misfits(params, chosen), *params.task_misfits()]
    errors = [{"type": "value_error", "loc": (*loc, field), "input": value, "msg": msg}
              for field, value, msg in misfits]
    declared = sorted(settings.adapters)
    errors += [{"type": "value_error", "loc": (*loc, "adapters", n, "name"), "input": a.name,
                "msg": f"adapter {a.name!r} is not declared here (GENFLEET_ADAPTERS); declared: {declared}"}
               for n, a in enumerate(params.adapters) if a.name not in settings.adapters]
    if errors:
        raise RequestValidationError(errors)
    return chosen


def check_webhook(url: AnyUrl | str | None, settings: Settings, loc: Loc = ("body", "webhook_url")) -> None:
    if url is None:
        return
    if not settings.webhook_secret:
        raise invalid(loc, str(url), "webhooks are off on this server (GENFLEET_WEBHOOK_SECRET is unset)")
    try:
        # no DNS lookup here: the deliverer resolves and checks again right before each send
        check_target(str(url), settings.webhook_allow_private, resolve=False)
    except UnsafeTarget as e:
        raise invalid(loc, str(url), str(e)) from None


async def admit(state: State, who: Caller, jobs: int, images: int, queue: Callable[[], Awaitable[None]],
                undo: Callable[[], Awaitable[None]] | None = None, bounded: bool = False) -> None:
    """Admits `jobs` jobs of `images` images in all, then runs `queue` (record and publish). If Redis fails on
    the way, the rate units are refunded, `undo` cancels what was recorded, and the client gets a 503: nothing
    that answer refused is left queued. `bounded`: `queue` checks the queue's depth itself, in the same atomic
    step as its write (a single job's one round trip), and raises QueueFull; the request then costs nothing."""
    if not bounded:
        await state.limits.check_depth(jobs)
    await state.limits.admit(who.key_id, images)
    try:
        await queue()
    except QueueFull as e:
        await state.limits.refund(who.key_id, images, rate=True)
        raise state.limits.backpressure(e.depth) from None
    except (redis.RedisError, OSError) as e:
        await state.limits.refund(who.key_id, images)
        if undo is not None:
            await undo()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"queue unavailable: {e}",
                            headers={"Retry-After": "5"}) from e


async def idempotent(state: State, request: Request, who: Caller, key: str | None, body: Callable[[], str],
                     make: Callable[[], Awaitable[Made]]) -> tuple[str, Made | None]:
    """Runs `make` once per (tenant, key, body): (its resource's id, what it made), or, for a repeat,
    (the first request's resource id, None). `body` gives the request's canonical body, asked for only when a
    key is given."""
    if key is None:
        made = await make()
        return str(made.id), made
    ledger = state.idempotency
    fp = fingerprint(request.url.path, body())
    earlier = await ledger.begin(who.tenant, key, fp)
    if earlier is not None:
        return earlier, None
    try:
        made = await make()
    except BaseException:
        await ledger.abandon(who.tenant, key)
        raise
    await ledger.complete(who.tenant, key, fp, str(made.id))
    return str(made.id), made

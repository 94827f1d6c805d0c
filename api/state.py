"""What every request handler works with, built once per app and handed to handlers as a typed dependency
(`AppState`), rather than read off Starlette's untyped `app.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio
from celery import Celery
from fastapi import Depends, FastAPI, Request

from genfleet.api.idempotency import Idempotency
from genfleet.api.keyring import KeyRing
from genfleet.api.limits import Limits
from genfleet.shared.batches import BatchStore
from genfleet.shared.durability import Durability
from genfleet.shared.fairshare import Fairness
from genfleet.shared.jobstore import JobStore
from genfleet.shared.outcomes import Outcomes
from genfleet.shared.queue import publisher
from genfleet.shared.redis_server import async_client, client
from genfleet.shared.settings import Settings
from genfleet.shared.storage import Storage, open_storage
from genfleet.shared.webhooks import notify


@dataclass(frozen=True)
class State:
    settings: Settings
    keys: KeyRing
    store: JobStore
    aredis: redis.asyncio.Redis
    batches: BatchStore
    storage: Storage
    publisher: Celery
    limits: Limits
    idempotency: Idempotency
    outcomes: Outcomes


def build(settings: Settings, redis_url: str) -> State:
    r = client(redis_url)
    durability = Durability(r, settings.durability, settings.durability_replicas, settings.durability_timeout_ms)
    store = JobStore(r, settings.job_ttl_s, durability, Fairness.of(settings))
    batches = BatchStore(store)
    storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
    app = publisher(settings, redis_url)

    def webhook(url: str | None, event: dict[str, Any]) -> None:
        notify(app, settings.queue, url, event)

    ar = async_client(redis_url)
    return State(settings=settings, keys=KeyRing(settings.api_keys), store=store, aredis=ar,
                 batches=batches, storage=storage, publisher=app, limits=Limits(ar, settings),
                 idempotency=Idempotency(ar, settings.idempotency_ttl_s),
                 outcomes=Outcomes(batches, storage, webhook))


def attach(app: FastAPI, state: State) -> None:
    app.state.genfleet = state


def of(app: FastAPI) -> State:
    state: State = app.state.genfleet
    return state


async def _state(request: Request) -> State:
    return of(request.app)  # async: a plain read, so FastAPI runs it inline rather than on its thread pool


AppState = Annotated[State, Depends(_state)]

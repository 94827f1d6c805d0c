"""The enqueue API: validate, authenticate, admit, record, publish. Serve with `genfleet api` (uvicorn
`genfleet.api.app:app`).

It never imports torch or the worker: jobs leave as Celery messages published by task name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import REGISTRY

from genfleet.api import batches, events, health, jobs
from genfleet.api.auth import KeyRing
from genfleet.api.errors import BodyLimit, validation_error
from genfleet.api.idempotency import Idempotency
from genfleet.api.limits import Limits
from genfleet.api.observe import ObserveRequests
from genfleet.api.queue_metrics import QueueCollector
from genfleet.shared import logs
from genfleet.shared.batches import BatchStore
from genfleet.shared.durability import Durability
from genfleet.shared.jobstore import JobStore
from genfleet.shared.outcomes import Outcomes
from genfleet.shared.queue import publisher
from genfleet.shared.redis_server import async_client, client
from genfleet.shared.settings import Settings, get_settings
from genfleet.shared.storage import open_storage
from genfleet.shared.sweeper import Sweeper
from genfleet.shared.webhooks import notify

_collector: QueueCollector | None = None


def _register_queue_metrics(store: JobStore, queue: str) -> None:
    global _collector
    if _collector is not None:  # one per process: a second app (tests) replaces the first
        REGISTRY.unregister(_collector)
    _collector = QueueCollector(store, queue)
    REGISTRY.register(_collector)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise RuntimeError("GENFLEET_REDIS_URL is not set: run `genfleet api`, which starts the embedded Redis")
    logs.configure(settings.log_format)
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = Sweeper(app.state.store, app.state.publisher, settings.queue, settings.publish_grace_s)
        sweeper.start()
        yield
        sweeper.stop()

    app = FastAPI(title="genfleet", version=metadata.version("genfleet"), lifespan=lifespan,
                  description="Queue text-to-image jobs; GPU workers generate, score and store the images.")
    s = app.state
    s.settings = settings
    s.keys = KeyRing(settings.api_keys)
    r = client(settings.redis_url)
    s.store = JobStore(r, settings.job_ttl_s, Durability(r, settings.durability, settings.durability_replicas,
                                                         settings.durability_timeout_ms))
    s.aredis = async_client(settings.redis_url)
    s.batches = BatchStore(s.store)
    s.storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
    s.publisher = publisher(settings, settings.redis_url)
    s.limits = Limits(s.store.redis, settings)
    s.idempotency = Idempotency(s.store.redis, settings.idempotency_ttl_s)
    s.outcomes = Outcomes(s.batches, s.storage, lambda url, event: notify(s.publisher, settings.queue, url, event))
    _register_queue_metrics(s.store, settings.queue)
    for module in (jobs, events, batches, health):
        app.include_router(module.router)

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            for name, schema in batches.schemas().items():
                spec["components"]["schemas"].setdefault(name, schema)
        return app.openapi_schema

    app.openapi = openapi

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ObserveRequests)
    return app


def __getattr__(name: str) -> FastAPI:
    # `api.app:app` builds the app on first access, so importing this module reads no settings.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)

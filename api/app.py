"""The enqueue API: validate, authenticate, admit, record, publish. Serve with `genfleet api` (uvicorn
`genfleet.api.app:app`).

It never imports torch or the worker: jobs leave as Celery messages published by task name.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from genfleet.api import (
    batch_results,
    batches,
    events,
    fleet,
    health,
    inputs,
    jobs,
    openai_images,
    openai_models,
    ui,
    usage,
    verify,
)
from genfleet.api.errors import BodyLimit, redis_unavailable, validation_error
from genfleet.api.observe import ObserveRequests
from genfleet.api.queue_metrics import QueueCollector
from genfleet.api.state import attach, build
from genfleet.api.tenant_metrics import TenantCollector
from genfleet.shared import logs
from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import model_queues, webhook_queue
from genfleet.shared.settings import Settings, get_settings
from genfleet.shared.sweeper import Sweeper

_collectors: list[Collector] = []


def _register_redis_metrics(store: JobStore, settings: Settings, tenants: set[str]) -> None:
    """The metrics read from Redis at scrape time: one set per process, a second app (tests) replaces the first."""
    for old in _collectors:
        REGISTRY.unregister(old)
    _collectors[:] = [QueueCollector(store, model_queues(settings), webhook_queue(settings.queue)),
                      TenantCollector(store.redis, tenants)]
    for collector in _collectors:
        REGISTRY.register(collector)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise RuntimeError("GENFLEET_REDIS_URL is not set: run `genfleet api`, which starts the embedded Redis")
    logs.configure(settings.log_format)
    state = build(settings, settings.redis_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = Sweeper(state.store, state.publisher, settings)
        sweeper.start()
        # Under load, in-flight requests' objects outlive young collections, so full ones come about twice a
        # second, and each walked every object the imports made: 50 to 65 ms with the event loop stopped, the
        # p99 of a loaded API. Frozen, the startup heap is never walked again (docs/benchmarks.md).
        gc.freeze()
        yield
        sweeper.stop()

    app = FastAPI(title="genfleet", version=metadata.version("genfleet"), lifespan=lifespan,
                  description="Queue text-to-image jobs; GPU workers generate, score and store the images.")
    attach(app, state)
    _register_redis_metrics(state.store, settings, state.keys.tenants)
    for module in (jobs, inputs, events, batches, batch_results, fleet, usage, health, openai_images, openai_models,
                   verify):
        app.include_router(module.router)
    ui.mount(app, settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            for name, schema in batches.schemas().items():
                spec["components"]["schemas"].setdefault(name, schema)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(redis.RedisError, redis_unavailable)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ObserveRequests)
    return app


def __getattr__(name: str) -> FastAPI:
    # `api.app:app` builds the app on first access, so importing this module reads no settings.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)

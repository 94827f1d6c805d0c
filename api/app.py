"""The enqueue API: validate, authenticate, record, publish. Serve with `genfleet api` (uvicorn `api.app:app`).

It never imports torch or the worker: jobs leave as Celery messages published by task name.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request

from api import health, jobs
from api.auth import KeyRing
from shared import metrics
from shared.jobstore import JobStore
from shared.queue import publisher
from shared.redis_server import client
from shared.settings import Settings, get_settings
from shared.storage import open_storage


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise RuntimeError("GENFLEET_REDIS_URL is not set: run `genfleet api`, which starts the embedded Redis")
    app = FastAPI(title="genfleet", version="0.1.0",
                  description="Queue text-to-image jobs; GPU workers generate, score and store the images.")
    app.state.settings = settings
    app.state.keys = KeyRing(settings.api_keys)
    app.state.store = JobStore(client(settings.redis_url), settings.job_ttl_s)
    app.state.storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
    app.state.publisher = publisher(settings, settings.redis_url)
    app.include_router(jobs.router)
    app.include_router(health.router)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"  # templates, not ids: bounded label values
        metrics.HTTP_REQUESTS.labels(path, request.method, str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(path, request.method).observe(time.perf_counter() - start)
        return response

    return app


def __getattr__(name: str) -> FastAPI:
    # `api.app:app` builds the app on first access, so importing this module reads no settings.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)

"""Probes and metrics: `/healthz` (the process is alive), `/readyz` (Redis and storage answer), `/metrics`."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from genfleet.api.state import AppState

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: AppState) -> JSONResponse:
    checks: dict[str, str] = {}
    probes: tuple[tuple[str, Callable[[], object]], ...] = (("redis", state.store.redis.ping),
                                                           ("storage", state.storage.check))
    for name, probe in probes:
        try:
            probe()
            checks[name] = "ok"
        except Exception as e:  # any failure means not ready; say which and why
            checks[name] = f"{type(e).__name__}: {e}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

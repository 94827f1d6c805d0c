"""`GET /v1/fleet`: the fleet at a glance (queues, workers alive, images per minute, models served), for the
web page and any other client."""

from __future__ import annotations

from fastapi import APIRouter

from genfleet.api.auth import Who
from genfleet.api.state import AppState
from genfleet.shared import fleet, leases, usage
from genfleet.shared.fleet import FleetView, TenantView
from genfleet.shared.queue import model_queues

router = APIRouter(prefix="/v1", tags=["fleet"])


@router.get("/fleet", response_model=FleetView, responses={401: {"description": "missing or invalid API key"}})
def get_fleet(state: AppState, who: Who) -> FleetView:
    """Queue depth and the oldest waiting job per priority (every tenant's: the queue is shared), the caller's
    own tenant's waiting jobs and last day's usage, the workers that renewed their leases within one visibility
    timeout, and images stored in each of the last 60 minutes."""
    r, settings = state.store.redis, state.settings
    own = TenantView(tenant=who.tenant, waiting=usage.waiting(r, [who.tenant])[who.tenant],
                     last_day=usage.last_day(r, who.tenant))
    return FleetView(queues=list(fleet.queues(state.store, model_queues(settings))), tenant=own,
                     workers=leases.workers(r, settings.visibility_timeout_s),
                     images_per_minute=fleet.images_per_minute(r), models=settings.models)

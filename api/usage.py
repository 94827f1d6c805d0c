"""`GET /v1/usage`: what the caller's own tenant used, by hour, read from Redis (shared/usage.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from genfleet.api.auth import Who
from genfleet.api.state import AppState
from genfleet.shared import usage
from genfleet.shared.usage import UsageReport

router = APIRouter(prefix="/v1", tags=["usage"])


def _refuse(field: str, msg: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["query", field], "msg": msg, "type": "value_error"}])


@router.get("/usage", response_model=UsageReport,
            responses={401: {"description": "missing or invalid API key"}, 422: {"description": "a bad range"}})
def get_usage(state: AppState, who: Who,
              start: Annotated[datetime | None, Query(alias="from", description="default: `to` less 24 h")] = None,
              end: Annotated[datetime | None, Query(alias="to", description="default: now")] = None) -> UsageReport:
    """Images, jobs, accelerator seconds and queue wait of the caller's tenant, by UTC hour, over whole hours
    from `from` to `to` (ISO 8601; without a zone, UTC), at most 31 days. No other tenant's usage is readable."""
    end = _utc(end) if end else datetime.now(UTC)
    start = _utc(start) if start else end - timedelta(hours=24)
    if end <= start:
        raise _refuse("to", "must be later than `from`")
    if len(usage.hours(start, end)) > usage.MAX_HOURS:
        raise _refuse("from", f"the range may cover at most {usage.MAX_HOURS // 24} days")
    return usage.report(state.store.redis, who.tenant, start, end)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)

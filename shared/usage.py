"""What each tenant used, read back from Redis: by hour for `GET /v1/usage`, in total for Prometheus.

The job store writes it (shared/jobstore.py): a job that ran adds its images, itself, its accelerator seconds and
its queue wait to its tenant's hash for the hour it finished, in the same Lua step as its terminal record, so a
tenant's usage is exactly the sum over its jobs' records. Jobs waiting per tenant are counted the same way, as
their records enter and leave `queued`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import redis
from pydantic import BaseModel

from genfleet.shared import keys

FIELDS = ("images", "jobs", "accelerator_s", "queue_s")
MAX_HOURS = 31 * 24  # the longest range one request may read
OTHER = "other"  # the Prometheus label of every tenant the API's keys do not name


class UsageFigures(BaseModel):
    images: int = 0
    jobs: int = 0
    accelerator_s: float = 0.0  # the jobs' shares of pipeline time (shared/schema.py `Usage`)
    queue_s: float = 0.0  # their waits from creation to first start, summed


class UsageHour(UsageFigures):
    hour: datetime  # the hour's start, UTC


class UsageReport(BaseModel):
    tenant: str
    start: datetime
    end: datetime
    hours: list[UsageHour]  # the hours with any usage, oldest first
    total: UsageFigures


def _figures(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items() if k.decode() in FIELDS}


def hours(start: datetime, end: datetime) -> list[int]:
    """The UTC hours (unix time // 3600) that [start, end) touches."""
    first, last = int(start.timestamp()) // 3600, (int(end.timestamp()) - 1) // 3600
    return list(range(first, last + 1))


def report(r: redis.Redis, tenant: str, start: datetime, end: datetime) -> UsageReport:
    """`tenant`'s usage in the hours from `start` to `end` (whole hours: an hour counts if the range touches it)."""
    span = hours(start, end)
    pipe = r.pipeline(transaction=False)
    for hour in span:
        pipe.hgetall(keys.usage(tenant, hour))
    rows = []
    for hour, raw in zip(span, pipe.execute(), strict=True):
        if raw:
            rows.append(UsageHour(hour=datetime.fromtimestamp(hour * 3600, UTC), **_figures(raw)))
    total = UsageFigures(**{f: sum(getattr(row, f) for row in rows) for f in FIELDS})
    return UsageReport(tenant=tenant, start=start, end=end, hours=rows, total=total)


def last_day(r: redis.Redis, tenant: str) -> UsageFigures:
    end = datetime.now(UTC)
    return report(r, tenant, end - timedelta(hours=24), end).total


def label(tenant: str, known: set[str]) -> str:
    """A tenant's Prometheus label: its name if the API's keys name it (or `public`, open access), else
    `other`, so the series stay as few as the configured keys whatever a record says."""
    return tenant if tenant in known else OTHER


def totals(r: redis.Redis, known: set[str]) -> dict[tuple[str, str], float]:
    """Lifetime usage by (label, field), every tenant outside `known` summed under `other`."""
    out: dict[tuple[str, str], float] = {}
    for k, v in r.hscan_iter(keys.USAGE_TOTAL, count=1000):
        tenant, _, field = k.decode().rpartition("|")
        if field in FIELDS:
            key = (label(tenant, known), field)
            out[key] = out.get(key, 0.0) + float(v)
    return out


def waiting(r: redis.Redis, tenants: Iterable[str]) -> dict[str, int]:
    """Jobs whose status is `queued`, for each of `tenants`."""
    names = list(tenants)
    counts = r.hmget(keys.QUEUED_BY_TENANT, names) if names else []
    return {t: max(0, int(c or 0)) for t, c in zip(names, counts, strict=True)}

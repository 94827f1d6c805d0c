"""The fleet at a glance, as the web page and `GET /v1/fleet` show it: queue depth and the oldest waiting job
per priority, the workers alive, and images stored per minute over the last hour.

Everything is read from Redis when asked. Workers announce themselves on each lease renewal
(shared/leases.py `announce`); images are counted per minute where a job's success is recorded (shared/outcomes.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from pydantic import BaseModel

from genfleet.shared import keys
from genfleet.shared.fairshare import backlogs, returned, waiting
from genfleet.shared.jobstore import JobStore
from genfleet.shared.kombu_adapter import task_id
from genfleet.shared.leases import WorkerView
from genfleet.shared.queue import PRIORITY_STEPS, priority_lists
from genfleet.shared.usage import UsageFigures

MINUTES = 60  # the images-per-minute window
_AGE_TENANTS = 100  # the oldest waiting job is looked for among the next tenants to be served, not every tenant
_MINUTE_TTL_S = 2 * MINUTES * 60


class QueueView(BaseModel):
    priority: str
    depth: int
    oldest_age_s: float  # 0 when nothing waits


class TenantView(BaseModel):
    """The caller's own tenant: its jobs waiting (of the queues' total), and its usage over the last 24 hours."""

    tenant: str
    waiting: int
    last_day: UsageFigures


class FleetView(BaseModel):
    queues: list[QueueView]  # every tenant's jobs: the queues are shared
    tenant: TenantView
    workers: list[WorkerView]
    images_per_minute: list[int]  # the last `MINUTES` whole minutes, oldest first, then the current one
    models: list[str]  # what a job may ask for; the first is the default


def oldest_age(store: JobStore, queue_list: str, now: datetime) -> float:
    """Seconds the oldest message of one priority list has waited, in the list or a tenant's backlog: each is
    LPUSHed and popped from the right, so its oldest is the one at the tail, whose task id is the job id, whose
    record says when it was queued."""
    pipe = store.redis.pipeline(transaction=False)
    for name in (queue_list, returned(queue_list), *backlogs(store.redis, queue_list, _AGE_TENANTS)):
        pipe.lindex(name, -1)
    ids = [i for raw in pipe.execute() if raw is not None and (i := task_id(raw)) is not None]
    created = [job.created_at for job in store.get_many(ids) if job is not None]
    return max(0.0, (now - min(created)).total_seconds()) if created else 0.0


def queues(store: JobStore, names: list[str]) -> Iterator[QueueView]:
    """Per priority, over every model's queue (`names`): the jobs waiting, and the oldest one's age."""
    now = datetime.now(UTC)
    for step, priority in enumerate(PRIORITY_STEPS):
        lists = [priority_lists(queue)[step] for queue in names]
        yield QueueView(priority=priority.value, depth=sum(waiting(store.redis, lists)),
                        oldest_age_s=max(oldest_age(store, n, now) for n in lists))


def count_images(r: redis.Redis, n: int) -> None:
    minute = int(time.time() // 60)
    pipe = r.pipeline(transaction=False)
    pipe.incrby(keys.images_minute(minute), n)
    pipe.expire(keys.images_minute(minute), _MINUTE_TTL_S)
    pipe.execute()


def images_per_minute(r: redis.Redis) -> list[int]:
    current = int(time.time() // 60)
    counts = r.mget([keys.images_minute(m) for m in range(current - MINUTES, current + 1)])
    return [int(c) if c else 0 for c in counts]

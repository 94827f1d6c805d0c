"""Queue depth and the age of the oldest waiting job, read from Redis each time `/metrics` is scraped.

A custom prometheus-client collector, so the numbers are as fresh as the scrape and no background loop runs.
The web page reads the same numbers through `GET /v1/fleet` (shared/fleet.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from genfleet.shared.fairshare import waiting
from genfleet.shared.fleet import oldest_age
from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import PRIORITY_STEPS, priority_lists


class QueueCollector(Collector):
    """Every model's queue (shared/queue.py `queue_for`), by priority, and the webhook deliverer's."""

    def __init__(self, store: JobStore, queues: list[str], webhooks: str) -> None:
        self.store, self.queues, self.webhooks = store, queues, webhooks

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("genfleet_queue_depth", "Messages waiting in the queue (not yet reserved)",
                                  labels=["queue", "priority"])
        age = GaugeMetricFamily("genfleet_queue_oldest_age_seconds", "Age of the oldest waiting job",
                                labels=["queue", "priority"])
        now = datetime.now(UTC)
        try:
            for queue in self.queues:
                lists = priority_lists(queue)
                counts = waiting(self.store.redis, lists)  # in the ready lists and the tenants' backlogs
                for priority, name, count in zip(PRIORITY_STEPS, lists, counts, strict=True):
                    depth.add_metric([queue, priority.value], count)
                    age.add_metric([queue, priority.value], oldest_age(self.store, name, now))
            depth.add_metric([self.webhooks, "normal"],
                             sum(self.store.redis.llen(n) for n in priority_lists(self.webhooks)))
        except redis.RedisError:
            return  # Redis down: no sample rather than a wrong one (the scrape itself still succeeds)
        yield depth
        yield age

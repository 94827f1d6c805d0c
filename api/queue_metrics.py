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

from genfleet.shared.fleet import oldest_age
from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import PRIORITY_STEPS, priority_lists, webhook_queue


class QueueCollector(Collector):
    def __init__(self, store: JobStore, queue: str) -> None:
        self.store, self.queue = store, queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("genfleet_queue_depth", "Messages waiting in the queue (not yet reserved)",
                                  labels=["queue", "priority"])
        age = GaugeMetricFamily("genfleet_queue_oldest_age_seconds", "Age of the oldest waiting job",
                                labels=["queue", "priority"])
        now = datetime.now(UTC)
        try:
            for priority, name in zip(PRIORITY_STEPS, priority_lists(self.queue), strict=True):
                depth.add_metric([self.queue, priority.value], self.store.redis.llen(name))
                age.add_metric([self.queue, priority.value], oldest_age(self.store, name, now))
            webhooks = webhook_queue(self.queue)
            depth.add_metric([webhooks, "normal"], sum(self.store.redis.llen(n) for n in priority_lists(webhooks)))
        except redis.RedisError:
            return  # Redis down: no sample rather than a wrong one (the scrape itself still succeeds)
        yield depth
        yield age

"""Queue depth and the age of the oldest waiting job, read from Redis each time `/metrics` is scraped.

A custom prometheus-client collector, so the numbers are as fresh as the scrape and no background loop runs.
The oldest message of a priority list is the one at its tail (kombu LPUSHes and BRPOPs); its task id is the
job id, whose record says when it was queued.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import PRIORITY_STEPS, priority_lists, webhook_queue


class QueueCollector(Collector):
    def __init__(self, store: JobStore, queue: str) -> None:
        self.store, self.queue = store, queue

    def _oldest_age(self, name: str, now: datetime) -> float:
        raw = self.store.redis.lindex(name, -1)
        if raw is None:
            return 0.0
        try:
            job_id = json.loads(raw)["headers"]["id"]
        except (ValueError, KeyError, TypeError):
            return 0.0
        job = self.store.get(job_id)
        return max(0.0, (now - job.created_at).total_seconds()) if job else 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("genfleet_queue_depth", "Messages waiting in the queue (not yet reserved)",
                                  labels=["queue", "priority"])
        age = GaugeMetricFamily("genfleet_queue_oldest_age_seconds", "Age of the oldest waiting job",
                                labels=["queue", "priority"])
        now = datetime.now(UTC)
        try:
            for priority, name in zip(PRIORITY_STEPS, priority_lists(self.queue), strict=True):
                depth.add_metric([self.queue, priority.value], self.store.redis.llen(name))
                age.add_metric([self.queue, priority.value], self._oldest_age(name, now))
            webhooks = webhook_queue(self.queue)
            depth.add_metric([webhooks, "normal"], sum(self.store.redis.llen(n) for n in priority_lists(webhooks)))
        except redis.RedisError:
            return  # Redis down: no sample rather than a wrong one (the scrape itself still succeeds)
        yield depth
        yield age

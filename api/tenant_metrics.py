"""Usage and waiting jobs per tenant, read from Redis each time `/metrics` is scraped (shared/usage.py).

Counters from the lifetime totals the job store keeps, so every API replica reports the same series and a
dashboard takes `max` across them, not `sum`. The label set is bounded by the configured keys: a tenant they do
not name (a key since removed) counts as `other`.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from genfleet.shared import usage

_COUNTERS = {"images": ("genfleet_tenant_images", "Images stored for the tenant's jobs"),
             "jobs": ("genfleet_tenant_jobs", "The tenant's jobs that ran to an outcome"),
             "accelerator_s": ("genfleet_tenant_accelerator_seconds", "The tenant's jobs' shares of pipeline time"),
             "queue_s": ("genfleet_tenant_queue_seconds", "Seconds the tenant's jobs waited before they started")}


class TenantCollector(Collector):
    def __init__(self, r: redis.Redis, tenants: set[str]) -> None:
        self.redis, self.tenants = r, tenants

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        try:
            totals = usage.totals(self.redis, self.tenants)
            waiting = usage.waiting(self.redis, sorted(self.tenants))
        except redis.RedisError:
            return  # no sample rather than a wrong one
        for field, (name, doc) in _COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=["tenant"])
            for tenant in sorted(self.tenants | {usage.OTHER}):
                family.add_metric([tenant], totals.get((tenant, field), 0.0))
            yield family
        gauge = GaugeMetricFamily("genfleet_tenant_waiting_jobs", "The tenant's jobs whose status is queued",
                                  labels=["tenant"])
        for tenant, n in waiting.items():
            gauge.add_metric([tenant], n)
        yield gauge

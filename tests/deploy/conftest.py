"""Helpers for the deploy tests: the metric names genfleet exports, read from its own metric objects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from genfleet.api.queue_metrics import QueueCollector
from genfleet.api.tenant_metrics import TenantCollector
from genfleet.shared import metrics
from genfleet.shared.jobstore import JobStore

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@pytest.fixture
def exported(redis) -> set[str]:
    """Every series name genfleet's processes can export (the scrape-time collector runs against Redis)."""
    families = [f for m in vars(metrics).values() if isinstance(m, MetricWrapperBase) for f in m.describe()]
    families += list(QueueCollector(JobStore(redis, 60), ["genfleet"], "genfleet.webhooks").collect())
    families += list(TenantCollector(redis, {"public"}).collect())
    return {f.name + suffix for f in families for suffix in _SUFFIXES[f.type]}


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bgenfleet_[a-z0-9_]+", text))

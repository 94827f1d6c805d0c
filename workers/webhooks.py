"""The webhook deliverer: a small Celery app of its own, with no torch, run by `genfleet webhooks`.

Celery's own retry does the backoff (exponential, jittered, capped); a delivery that exhausts its attempts is
kept as a dead letter. Messages are acked late, so a deliverer that dies mid-send delivers again: receivers
drop repeats by the `webhook-id` header, as Standard Webhooks asks. `create_app(settings)` builds the app;
importing the module builds nothing (`celery -A genfleet.workers.webhooks` builds it from the environment).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from celery import Celery, signals
from celery.utils.time import get_exponential_backoff_interval
from prometheus_client import start_http_server

from genfleet.shared import keys
from genfleet.shared.errors import DeliveryFailed, UnsafeTarget
from genfleet.shared.logs import configure_celery_logging
from genfleet.shared.metrics import DEAD_LETTERS, WEBHOOKS
from genfleet.shared.queue import WEBHOOK_TASK, built_on_access, consumer, given_redis, webhook_queue
from genfleet.shared.redis_server import client
from genfleet.shared.settings import Settings
from genfleet.shared.webhooks import deliver

log = logging.getLogger(__name__)
_settings: Settings | None = None  # set by `create_app`: the task runs in this process's threads


def create_app(settings: Settings) -> Celery:
    global _settings
    _settings = settings
    app = consumer("genfleet-webhooks", settings, "webhooks", task_time_limit=60,
                   task_default_queue=webhook_queue(settings.queue))
    configure_celery_logging(settings.log_format)
    app.task(name=WEBHOOK_TASK, bind=True, max_retries=settings.webhook_attempts - 1)(send)
    signals.worker_init.connect(_serve_metrics, dispatch_uid="genfleet-webhooks-metrics")
    return app


__getattr__ = built_on_access(create_app)  # `celery -A genfleet.workers.webhooks` builds the app on first access


def settings() -> Settings:
    if _settings is None:
        raise RuntimeError("no webhook app in this process: call create_app(settings) first")
    return _settings


def _serve_metrics(**_: Any) -> None:
    port = settings().webhooks_metrics_port
    if port:  # one process (a thread pool): the default registry is all there is
        start_http_server(port)


def give_up(url: str, event: dict, reason: str) -> None:
    entry = json.dumps({"webhook": url, "event_id": event.get("id"), "kind": "webhook", "reason": reason,
                        "at": datetime.now(UTC).isoformat()})
    client(given_redis(settings(), "webhooks")).lpush(keys.DEAD_LETTER, entry)
    DEAD_LETTERS.labels("webhook").inc()


def send(self: Any, url: str, event: dict) -> int:
    try:
        status = deliver(url, event, settings().webhook_secret or "", settings().webhook_allow_private)
    except UnsafeTarget as e:  # resolving elsewhere now: never retried
        give_up(url, event, str(e))
        WEBHOOKS.labels("refused").inc()
        return 0
    except (httpx.HTTPError, DeliveryFailed) as e:
        if self.request.retries >= self.max_retries:
            give_up(url, event, f"{type(e).__name__}: {e}")
            WEBHOOKS.labels("gave_up").inc()
            return 0
        WEBHOOKS.labels("retried").inc()
        # Celery's retry: 1, 2, 4 ... s, capped at 5 minutes, with full jitter
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e
    WEBHOOKS.labels("delivered").inc()
    log.info("webhook delivered", extra={"event_id": event["id"], "status": status})
    return status


def _backoff(retries: int) -> float:
    return get_exponential_backoff_interval(factor=1, retries=retries, maximum=300, full_jitter=True)

"""Webhooks: signed with Standard Webhooks (HMAC-SHA256), delivered by Celery with backoff, never to private
addresses unless a setting allows it.

The API checks a target when a job is submitted (a clear 422), and the deliverer checks it again just before
each send, because a hostname may resolve somewhere else by then. Delivery runs in its own worker
(`genfleet webhooks`), so a slow receiver never holds a GPU batch.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
from celery import Celery
from standardwebhooks.webhooks import Webhook

from genfleet.shared.errors import DeliveryFailed, UnsafeTarget
from genfleet.shared.queue import WEBHOOK_TASK, webhook_queue

if TYPE_CHECKING:  # imported for annotations only: the batch and job stores import this module
    from genfleet.shared.batches import Batch
    from genfleet.shared.schema import Job


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return not ip.is_global or ip.is_multicast


def check_target(url: str, allow_private: bool, resolve: bool = True) -> None:
    """Raises UnsafeTarget unless every address `url`'s host resolves to is public (or private is allowed)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UnsafeTarget(f"{url!r} is not an http(s) URL")
    if allow_private:
        return
    host = parsed.hostname
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            raise UnsafeTarget(f"{host} is an internal name") from None
        if not resolve:
            return
        try:
            addresses = sorted({str(info[4][0]) for info in socket.getaddrinfo(host, parsed.port or 443)})
        except socket.gaierror as e:
            raise UnsafeTarget(f"{host} does not resolve: {e}") from None
    bad = [a for a in addresses if _internal(a)]
    if bad:
        raise UnsafeTarget(f"{host} resolves to a non-public address ({', '.join(bad)}); "
                           "set GENFLEET_WEBHOOK_ALLOW_PRIVATE=true to allow it")


def headers(secret: str, msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for `body`: receivers verify them with any of its libraries."""
    now = now or datetime.now(UTC)
    return {"content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, now, body)}


def deliver(url: str, event: dict[str, Any], secret: str, allow_private: bool, timeout_s: float = 10.0) -> int:
    """One attempt: checks the target, signs and POSTs. Returns the status; raises to be retried."""
    check_target(url, allow_private)
    body = json.dumps(event, separators=(",", ":"))
    response = httpx.post(url, content=body, headers=headers(secret, event["id"], body), timeout=timeout_s,
                          follow_redirects=False)  # a redirect could lead anywhere, internal addresses included
    if not response.is_success:
        raise DeliveryFailed(f"{url} answered {response.status_code}")
    return response.status_code


def job_event(job: Job) -> dict[str, Any]:
    """`job.succeeded`, `job.failed` or `job.cancelled`; the id is stable, so a receiver can drop repeats."""
    kind = f"job.{job.status.value}"
    return {"id": f"{job.id}.{kind}", "type": kind, "timestamp": datetime.now(UTC).isoformat(),
            "data": json.loads(job.model_dump_json(exclude={"request"}))}


def batch_event(batch: Batch) -> dict[str, Any]:
    return {"id": f"{batch.id}.batch.finished", "type": "batch.finished",
            "timestamp": datetime.now(UTC).isoformat(), "data": json.loads(batch.model_dump_json())}


def notify(app: Celery, queue: str, url: str | None, event: dict[str, Any]) -> None:
    """Queues one delivery (no-op without a URL); the webhook worker retries it with backoff."""
    if url:
        app.send_task(WEBHOOK_TASK, args=[str(url), event], queue=webhook_queue(queue))

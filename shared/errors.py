"""The exceptions genfleet raises across its parts, in one place; each says what its catcher does with it."""

from __future__ import annotations

import redis


class SafetyUnavailable(Exception):
    """Images are to be checked (GENFLEET_SAFETY) but the safety checker's weights are not on this machine."""


class StorageUnavailable(Exception):
    """Storage stayed unreachable for the whole outage window (shared/storage.py's RideOut): the job fails, with
    a dead-letter record."""


class NotDurable(redis.RedisError):
    """A durability rule could not be confirmed in time (shared/durability.py). A RedisError, so the API answers
    503 as for Redis being away."""


class UnsafeTarget(ValueError):
    """A webhook URL points at a private, loopback, link-local or otherwise internal address: refused at the
    edge (422) and again right before each delivery, never retried."""


class DeliveryFailed(Exception):
    """A webhook receiver answered, but not with a 2xx: the delivery is retried with backoff."""


class QueueFull(Exception):
    """More messages wait than GENFLEET_MAX_QUEUE_DEPTH allows: nothing was written, and the API answers 503 with
    Retry-After (backpressure)."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"the queue holds {depth} waiting jobs")
        self.depth = depth


class MissingInterface(RuntimeError):
    """An installed celery, kombu, billiard or celery-batches lacks a name genfleet's delivery rests on (one of its
    adapter modules' `check()`): the worker refuses to start, naming it, rather than stall or run jobs twice later."""

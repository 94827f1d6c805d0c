"""A worker's fair-share dispatcher: keeps the lists it consumes topped up from the tenants' backlogs.

Publishing dispatches too (shared/fairshare.py), but only as far as the window: once a worker has taken what
was ready, the next messages must be moved on in fair order by someone, and the one who needs them is the worker.
A thread does it, woken each time the consumer receives a message (Celery's public `task_received` signal) and
otherwise every `IDLE_S` (a tenant unparked by a finished job, a publisher that died between its record and
its dispatch). Dispatch is one Lua call per queue, so workers racing each other never send a message twice.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import bootsteps, signals
from celery.worker.consumer import Consumer

from genfleet.shared.fairshare import FairShare

log = logging.getLogger(__name__)

IDLE_S = 0.5  # how often an idle worker looks anyway
RETRY_S = 1.0  # after a Redis error


class Refill(bootsteps.StartStopStep):
    """Runs the dispatcher thread while the consumer runs."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    fair: FairShare | None = None  # set by `refilling`
    queues: list[list[str]] = []  # each queue's lists, most urgent first

    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, c: Consumer) -> None:
        if self.fair is None or self.thread is not None:
            return  # (with fair share off it still runs: it drains what was left waiting while it was on)
        self.stopping.clear()
        signals.task_received.connect(self.received, weak=False, dispatch_uid=f"genfleet-refill-{id(self)}")
        self.thread = threading.Thread(target=self.run, name="genfleet-refill", daemon=True)
        self.thread.start()

    def received(self, **_: Any) -> None:
        self.wake.set()

    def run(self) -> None:
        assert self.fair is not None
        while not self.stopping.is_set():
            self.wake.wait(IDLE_S)
            self.wake.clear()
            try:
                self.fair.dispatch(self.queues)
            except redis.RedisError:  # an outage or a failover: the publishers' own dispatch covers meanwhile
                log.warning("fair-share dispatch failed; trying again", exc_info=True)
                self.stopping.wait(RETRY_S)

    def stop(self, c: Consumer) -> None:
        signals.task_received.disconnect(dispatch_uid=f"genfleet-refill-{id(self)}")
        self.stopping.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None

    def shutdown(self, c: Consumer) -> None:
        self.stop(c)


def refilling(fair: FairShare, queues: list[list[str]]) -> type[Refill]:
    """The dispatcher bootstep of a generating worker, for the queues it consumes (each its lists)."""
    return type("Refill", (Refill,), {"fair": fair, "queues": queues, "__module__": __name__})

"""Holding messages while a worker lives, and letting go of them the moment it dies.

kombu's Redis transport keeps every delivered, unacked message in a hash, and its index (a sorted set) by the
time of delivery; any consumer puts back the ones older than the visibility timeout. Stock, that timeout must
outlast the longest job, so a worker killed as a whole (OOM kill, node loss, spot preemption) strands its
running and prefetched jobs for an hour.

`HoldMessages`, a consumer bootstep, turns the timeout into a lease: every `visibility_timeout / 5` seconds a
live worker moves the index entries of every message it holds, running or only reserved, to now (`ZADD XX`,
so an acked or already restored message is never brought back). A worker that dies stops renewing, and within
about one timeout the next restore sweep of any live consumer (kombu's, every `RESTORE_INTERVAL_S`) requeues
its messages. The same tick rewrites the set of job ids the worker holds, under a key that expires a renewal
before the leases do; a running job's record names its worker, so a delivery that finds its job `running`
can tell a run that is still held (a duplicate delivery: leave it) from one whose worker died or gave it back
(run it again). A worker that generates also announces itself there, for the web page's list of workers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import bootsteps
from pydantic import BaseModel

from genfleet.shared import keys
from genfleet.shared.kombu_adapter import held as held_messages

Consumer = Any  # celery.worker.consumer.Consumer (Celery ships no types)
log = logging.getLogger(__name__)

RESTORE_INTERVAL_S = 2  # how often a consumer looks for messages whose lease ran out
RENEWALS_PER_TIMEOUT = 5  # a lease survives four missed renewals (a busy event loop, a Redis blip)
# kombu's restore sweep runs under a Redis lock (`unacked_mutex`) that expires after 300 s by default: a consumer
# SIGKILLed in the middle of its sweep (or a Redis killed under one, with the lock kept in its append-only file)
# stopped every sweep in the fleet for five minutes, and a dead worker's jobs with them (the chaos run caught
# it). A sweep takes milliseconds; two that overlap once the lock expires restore nothing twice, because kombu
# restores each message in a transaction that watches its unacked hash.
RESTORE_MUTEX_EXPIRE_S = 5

# Who runs a job, as its record names it: the host and the worker's main process. Pool processes are forked
# from the main process after this module is imported, so they share it.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def transport_options(visibility_timeout_s: int) -> dict[str, Any]:
    """kombu options for short leases: sweep often, scan on every sweep (kombu's default scans every 10th), and
    never let a dead sweeper's lock hold the others off for long."""
    return {"visibility_timeout": visibility_timeout_s, "unacked_restore_interval": RESTORE_INTERVAL_S,
            "unacked_restore_throttle": 1, "unacked_mutex_expire": RESTORE_MUTEX_EXPIRE_S}


class WorkerView(BaseModel):
    """A live worker, as the web page lists it."""

    id: str
    models: list[str]  # the models it keeps warm
    held: int  # messages it holds, running or prefetched
    seen_s: float  # seconds since it last renewed its leases


def announce(r: redis.Redis, worker_id: str, models: list[str], held: int) -> None:
    """A worker's heartbeat (one HSET); a worker that stops sending it drops out of `workers`."""
    r.hset(keys.WORKERS, worker_id, json.dumps({"seen": time.time(), "models": models, "held": held}))


def workers(r: redis.Redis, alive_s: float) -> list[WorkerView]:
    """Workers heard from in the last `alive_s` seconds; older entries are dropped from the hash."""
    now, alive, gone = time.time(), [], []
    for worker_id, raw in cast(dict[bytes, bytes], r.hgetall(keys.WORKERS)).items():
        beat = json.loads(raw)
        if now - beat["seen"] > alive_s:
            gone.append(worker_id)
            continue
        alive.append(WorkerView(id=worker_id.decode(), models=beat["models"], held=beat["held"],
                                seen_s=round(now - beat["seen"], 1)))
    if gone:
        r.hdel(keys.WORKERS, *gone)
    return sorted(alive, key=lambda w: w.id)


def holds(r: redis.Redis, worker_id: str | None, job_id: str) -> bool:
    """Whether `worker_id` is alive and still holds a message of `job_id`."""
    return worker_id is not None and bool(r.sismember(keys.worker(worker_id), job_id))


@dataclass
class Warm:
    """The models a generating worker keeps warm, most recently used first: its batches keep them current
    (workers/batching.py), and each lease renewal announces them with the worker (`announce`)."""

    models: list[str]


class HoldMessages(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery ships no types
    """Renews the lease of every message this consumer holds, and the set of job ids it holds."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    warm: Warm | None = None  # a generating worker's (`holding`); the webhook deliverer announces nothing

    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.timeout_s = c.app.conf.broker_transport_options["visibility_timeout"]
        self.tref = None

    def start(self, c: Consumer) -> None:
        self.ask_for_reconciliation(c)
        self.renew(c)
        self.tref = c.timer.call_repeatedly(self.timeout_s / RENEWALS_PER_TIMEOUT, self.renew, (c,), priority=10)

    def stop(self, c: Consumer) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, c: Consumer) -> None:
        self.stop(c)

    def ask_for_reconciliation(self, c: Consumer) -> None:
        """A consumer whose connection broke may have lost a message it was popping (shared/reconcile.py): each
        (re)start asks the next sweep to look for queued jobs that no message carries."""
        channel = c.task_consumer.channel if c.task_consumer else None
        if channel is None:
            return
        try:
            with channel.conn_or_acquire() as r:
                r.set(keys.RECONCILE, "1")
        except Exception:  # Redis away again: the consumer restarts once more, and asks then
            log.warning("could not ask for a reconciliation", exc_info=True)

    def renew(self, c: Consumer) -> None:
        channel = c.task_consumer.channel if c.task_consumer else None
        if channel is None:
            return
        held = held_messages(channel.qos)
        job_ids = [m.headers.get("id") for m in held.values() if m.headers.get("id")]
        key = keys.worker(WORKER_ID)
        try:
            with channel.conn_or_acquire() as r:
                pipe = r.pipeline(transaction=True)
                pipe.delete(key)
                if job_ids:
                    pipe.sadd(key, *job_ids)
                    # gone a renewal before the messages' leases run out, so a message requeued from a dead
                    # worker never finds its job still "held" by it
                    pipe.expire(key, int(self.timeout_s * (RENEWALS_PER_TIMEOUT - 1) / RENEWALS_PER_TIMEOUT))
                if held:
                    pipe.zadd(channel.unacked_index_key, dict.fromkeys(held, time.time()), xx=True)
                if self.warm is not None:  # a generating worker (not the webhook deliverer) shows on the page
                    announce(pipe, WORKER_ID, self.warm.models, len(held))
                pipe.execute()
        except Exception:  # a Redis outage: kombu reconnects; the next tick renews
            log.warning("could not renew the lease of %d message(s)", len(held), exc_info=True)


def holding(warm: Warm | None) -> type[HoldMessages]:
    """The lease bootstep of a consumer; one that generates announces `warm` with each renewal."""
    return type("HoldMessages", (HoldMessages,), {"warm": warm, "__module__": __name__})

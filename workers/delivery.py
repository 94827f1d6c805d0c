"""A delivery's life in a worker, from its message to its ack: the one module that decides ack, release or requeue.

A delivery is one message of a job, as the worker's main process holds it (docs/delivery.md draws it). The
main process batches deliveries and hands each batch to its pool process, which claims, samples, scores and
starts writing the jobs, and reports one `Event` per delivery; writes that outlive the batch are reported in
later reports. Every transition is a named method of `Delivery`, checked against `TRANSITIONS`; reaching an end
state settles the message, in `Delivery.settle`, and nowhere else:

- `acked`: the job's outcome is recorded, confirmed durable, and its images are stored;
- `released`: forgotten here, left unacked in Redis, so it comes back once its lease runs out (a live worker
  elsewhere holds the job, or its outcome is recorded but the durability rule did not confirm it yet);
- `requeued`: rejected back to the queue at once (its write raised, or its pool process died with it).

Each effect of a job is idempotent (fixed keys, create-if-absent writes, manifest last, one terminal status),
so a message that runs again after a release or a requeue is harmless.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from enum import StrEnum
from typing import Any

from genfleet.shared.errors import NotDurable
from genfleet.shared.kombu_adapter import release
from genfleet.shared.schema import Job

Request = Any  # celery.worker.request.Request (Celery ships no types)
log = logging.getLogger(__name__)


class State(StrEnum):
    delivered = "delivered"  # taken from the queue into the batch buffer; its lease renewed while the worker lives
    sampling = "sampling"  # handed to the pool process with its batch: claimed, sampled and scored there
    writing = "writing"  # sampled; its images are written while the next batch samples
    acked = "acked"
    released = "released"
    requeued = "requeued"


END_STATES = frozenset({State.acked, State.released, State.requeued})


class Event(StrEnum):
    """What happens to a delivery. All but `batched` and `lost` are reported by the pool process (as strings)."""

    batched = "batched"  # the main process handed its batch to the pool
    recorded = "recorded"  # its job's outcome is recorded and durable (now, or by an earlier run)
    writing = "writing"  # its images are being written: a later report says how that ended
    deferred = "deferred"  # leave it unacked: a live worker holds its job, or its outcome is not yet durable
    write_failed = "write_failed"  # its write raised
    lost = "lost"  # its pool process died (or its call raised, or the writes it held vanished)


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.delivered, Event.batched): State.sampling,
    (State.sampling, Event.recorded): State.acked,
    (State.sampling, Event.writing): State.writing,
    (State.sampling, Event.deferred): State.released,
    (State.sampling, Event.lost): State.requeued,
    (State.writing, Event.recorded): State.acked,
    (State.writing, Event.deferred): State.released,
    (State.writing, Event.write_failed): State.requeued,
    (State.writing, Event.lost): State.requeued,
}


class IllegalTransition(RuntimeError):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"a {state} delivery cannot be {event}")


class Delivery:
    """One message of a job in the worker's main process, and where it stands."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.state = State.delivered

    @property
    def id(self) -> str:
        return str(self.request.id)

    def batched(self) -> None:
        self._go(Event.batched)

    def report(self, event: Event) -> None:
        """What the pool process said of this delivery: recorded, writing, deferred or write_failed."""
        if event in (Event.batched, Event.lost):
            raise IllegalTransition(self.state, event)  # the main process's own events, never reported
        self._go(event)

    def lost(self) -> None:
        self._go(Event.lost)

    def _go(self, event: Event) -> None:
        to = TRANSITIONS.get((self.state, event))
        if to is None:
            raise IllegalTransition(self.state, event)
        self.state = to
        if to in END_STATES:
            self.settle()

    def settle(self) -> None:
        """The one place a message is acknowledged, released or requeued."""
        if self.state is State.acked:
            self.request.acknowledge()
        elif self.state is State.released:
            release(self.request.message)
        elif self.state is State.requeued:
            self.request.reject(requeue=True)
        else:
            raise IllegalTransition(self.state, Event.recorded)


def started(outcome: Job | Future[Job] | None) -> Event:
    """The event of a delivery whose batch was sampled (workers/runner.py's `start_batch` outcome): its job's
    record as stored, a future of it while its images are written, or None to leave the message unacked."""
    if isinstance(outcome, Future):
        return Event.writing
    return Event.deferred if outcome is None else Event.recorded


def written(result: Job | BaseException) -> Event:
    """The event of a delivery whose write ended: its job as recorded, or what the write raised."""
    if isinstance(result, NotDurable):
        log.warning("%s; its message comes back after its lease", result)
        return Event.deferred
    if isinstance(result, BaseException):
        log.error("a write raised %r; its message goes back to the queue", result)
        return Event.write_failed
    return Event.recorded

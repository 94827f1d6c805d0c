"""celery-batches, adjusted for one accelerator per worker.

celery-batches buffers messages and hands them to the pool as a list. Stock, it flushes every `flush_interval`
even while the pool is still busy with the previous batch, which splits a steady stream into many small
batches; it runs batches without Celery's time limits; and when the pool process dies it neither requeues nor
rejects the batch's messages. `AcceleratorBatches` changes those three things and nothing else:

- while a batch is running, the next one keeps filling (up to `flush_every`) and goes as soon as the pool is free;
- each batch runs under the task's soft and hard time limits;
- a batch whose process died, that hit the hard limit or whose function raised is requeued at once (the
  `reject_on_worker_lost` promise); the job store's terminal-status rule and create-if-absent writes make the
  rerun harmless. The batch function returns normally for jobs that merely failed: those are recorded and acked.

Two more, for faults: the jobs of a batch whose process died are reported (`lost`), and when they come back
(`suspects`; both hooks the task's class fills in) each runs in a pool call of its own, so a poison job that
kills its process cannot take innocent batch-mates down a second time; and a delivery the batch function
answers `release` is forgotten locally, not acked (its job is held by a live worker elsewhere; see
shared/leases.py).

And one for throughput: writes overlap the next batch. The batch function returns once its batch is sampled,
answering `later` for a message whose images are still being written; it reports those writes as they end in
the reports of later batches, or, when no batch follows, in a `drain` call that waits for them. A message is
acknowledged only once its write is reported. If the pool process dies, the messages whose writes it held go
back to the queue with its batch.

And one for a lost broker connection. The consumer then clears its timer, celery-batches' flush timer with it,
and the pool discards every call not yet handed to its process, so neither of that call's callbacks ever runs.
Left alone, the next batches would wait for a full buffer, and the last writes would never be drained nor their
messages acked. `Reconnected`, a consumer bootstep, forgets those calls and flushes or drains again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from celery import bootsteps
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from genfleet.shared.leases import ANNOUNCE_MODELS, release

log = logging.getLogger(__name__)


class Settle(StrEnum):
    """What the main process does with a delivered message."""

    ack = "ack"  # its job is recorded, its images stored
    release = "release"  # its job is held by a live worker elsewhere: forget it here, leave it unacked
    later = "later"  # its images are being written: a later report settles it
    requeue = "requeue"  # its write raised: back to the queue, to run again


@dataclass(frozen=True)
class Report:
    """A batch function's answer: one entry per request of its batch, in order, and the earlier requests (by
    task id) whose writes have ended since the last report."""

    now: list[Settle]
    written: dict[str, Settle] = field(default_factory=dict)
    outstanding: int = 0  # writes the pool process still holds after this report
    warm: list[str] | None = None  # the models the pool process holds now, most recently used first


class AcceleratorBatches(Batches):
    abstract = True
    _writing: dict[str, Request] | None = None  # requests answered `later`, by task id
    _calls: set[Any] | None = None  # pool calls (billiard ApplyResults) neither of whose callbacks has run yet

    @property
    def writing(self) -> dict[str, Request]:
        if self._writing is None:
            self._writing = {}
        return self._writing

    @property
    def calls(self) -> set[Any]:
        if self._calls is None:
            self._calls = set()
        return self._calls

    @property
    def _running(self) -> int:
        return len(self.calls)

    def drain(self) -> Callable[[], Report]:
        """The function a pool process runs to report its outstanding writes once they end (the task's class
        names it)."""
        raise NotImplementedError

    def _do_flush(self) -> None:
        if self._running and self._buffer.qsize() < self.flush_every:
            return  # keep filling: the pool is busy, and a bigger batch costs the accelerator almost nothing more
        super()._do_flush()

    def _finished(self) -> None:
        if not self._buffer.empty():
            self._do_flush()
        elif self.writing and not self._running:
            self._drain()

    def _act(self, req: Request, how: Settle) -> None:
        if how is Settle.ack:
            req.acknowledge()  # only now: its job is recorded, and stored if it succeeded
        elif how is Settle.release:
            release(req.message)
        elif how is Settle.later:
            self.writing[req.id] = req
        else:
            req.reject(requeue=True)

    def _settle(self, report: Report) -> None:
        """Acts on the earlier requests whose writes a report says have ended, and announces the models the
        pool process holds (each lease renewal carries them: shared/leases.py)."""
        if report.warm is not None:
            self.app.conf[ANNOUNCE_MODELS] = report.warm
        for task_id, how in report.written.items():
            req = self.writing.pop(task_id, None)
            if req is not None:
                self._act(req, how)

    def _submit(self, fn: Any, args: tuple[Any, ...], on_return: Callable[[Any], None],
                on_error: Callable[[BaseException], None], **limits: Any) -> Any:
        """A pool call, counted as running until one of its callbacks runs (or `reconnected` finds it
        discarded). The pool runs callbacks from the event loop, never within `apply_async`."""
        call: Any = None

        def returned(value: Any) -> None:
            self.calls.discard(call)
            on_return(value)

        def failed(exc: BaseException) -> None:
            self.calls.discard(call)
            on_error(exc)

        call = self._pool.apply_async(fn, args, callback=returned, error_callback=failed, **limits)
        self.calls.add(call)
        return call

    def reconnected(self) -> None:
        """The consumer (re)started: after a lost broker connection, forget the pool calls the pool discarded
        (their messages come back from the broker, as the pool expects), restart the flush timer with the next
        message, and flush or drain what waits."""
        self._tref = None  # the consumer cleared its timer: the next message starts a new one
        discarded = {c for c in self.calls if c._job not in c._cache}  # billiard drops a discarded call from it
        if discarded:
            log.warning("%d pool call(s) discarded with the broker connection; their messages come back",
                        len(discarded))
            self.calls.difference_update(discarded)
        if not self._buffer.empty():
            self._do_flush()
        elif self.writing and not self._running:
            self._drain()

    def _drain(self) -> None:
        """No batch is waiting: a pool call that waits for the outstanding writes and reports them."""

        def on_return(report: Report | None) -> None:
            if report is None:
                on_error(RuntimeError("drain raised"))
                return
            self._settle(report)
            if not report.outstanding and self.writing:
                # the pool process holds no more writes, yet some were never reported: their process was
                # replaced without an error reaching us. Back to the queue, rather than draining forever.
                self._lose([], RuntimeError("writes vanished with their process"))
            self._finished()

        def on_error(exc: BaseException) -> None:
            self._lose([], exc)
            self._finished()

        self._submit(self.drain(), (), on_return, on_error, timeout=self.time_limit or self.app.conf.task_time_limit)

    def _lose(self, requests: list[Request], exc: BaseException) -> None:
        """The pool process died (or its call raised): its batch, and the writes it held, go back to the queue;
        the batch's jobs are reported lost (they run alone when they come back)."""
        writing = list(self.writing.values())
        self.writing.clear()
        log.error("batch of %d lost (%r), with %d write(s) in flight; returning their messages to the queue",
                  len(requests), exc, len(writing))
        if requests:
            try:
                self.lost([r.id for r in requests])
            except Exception:  # Redis away: they will be batched as usual, which is still correct
                log.exception("could not mark the lost batch's jobs as suspects")
        for req in [*requests, *writing]:
            req.reject(requeue=True)

    def suspects(self, ids: list[str]) -> set[str]:
        """Of these redelivered task ids, those to run alone."""
        return set()

    def lost(self, ids: list[str]) -> None:
        """Called with the task ids of a batch whose process died."""

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        redelivered = [r.id for r in requests if (r.delivery_info or {}).get("redelivered")]
        try:
            suspects = self.suspects(redelivered) if redelivered else set()
        except Exception:  # Redis away: batch them as usual, which is still correct (only slower to isolate)
            log.warning("could not read which jobs died with an earlier run", exc_info=True)
            suspects = set()
        if suspects:
            log.warning("%d job(s) of this batch died with an earlier run; each runs alone", len(suspects))
        fresh = [r for r in requests if r.id not in suspects]
        for part in ([fresh] if fresh else []) + [[r] for r in requests if r.id in suspects]:
            self._run(part)

    def _run(self, requests: list[Request]) -> Any:
        conf = self.app.conf

        def on_return(report: Report | None) -> None:
            if report is None:  # the batch function raised (celery-batches logs it): nothing was recorded
                on_error(RuntimeError("batch function raised"))
                return
            for req, how in zip(requests, report.now, strict=True):
                self._act(req, how)
            self._settle(report)
            self._finished()

        def on_error(exc: BaseException) -> None:
            self._lose(requests, exc)
            self._finished()

        return self._submit(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None),
            on_return,
            on_error,
            timeout=self.time_limit or conf.task_time_limit,
            soft_timeout=self.soft_time_limit or conf.task_soft_time_limit,
        )


class Reconnected(bootsteps.StartStopStep):
    """Calls `reconnected` on the worker's AcceleratorBatches tasks each time the consumer (re)starts."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        for task in c.app.tasks.values():
            if isinstance(task, AcceleratorBatches):
                task.reconnected()

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
(`suspects`; both hooks the task's class fills in) each runs alone: in a pool call of its own, once the pool is
idle and every other job's write has ended, and before any new batch. So a poison job that kills its process
cannot take innocent jobs down a second time, neither a batch-mate nor a job whose images were being written
beside it (under load, a batch sampled just before the poison's could still be writing when it struck).

And one for throughput: writes overlap the next batch. The batch function returns once its batch is sampled,
reporting `writing` for a message whose images are still being written; it reports those writes as they end in
the reports of later batches, or, when no batch follows, in a `drain` call that waits for them. If the pool
process dies, the messages whose writes it held go back to the queue with its batch. What becomes of each message
(acked, released, requeued) is decided by its `Delivery` (workers/delivery.py), and nowhere here.

And one for fairness (docs/fair-share.md): a message stays unacknowledged, and so counts against the prefetch,
until its write ends. The prefetch is two batches, one sampling and one waiting, and each message being written
lends one more slot, up to a batch. So quick writes never let the worker reserve a second waiting batch, a
newcomer's job is dispatched behind at most one, and slow writes still leave room for the next batch. The slots
are lent through the consumer's `qos`, Celery's public counter (its ETA tasks borrow the same way).

And one for a lost broker connection. The consumer then clears its timer, celery-batches' flush timer with it,
and the pool discards every call not yet handed to its process, so neither of that call's callbacks ever runs.
Left alone, the next batches would wait for a full buffer, and the last writes would never be drained nor their
messages acked. `Reconnected`, a consumer bootstep, forgets those calls and flushes or drains again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from celery.worker.request import Request

from genfleet.workers.batches_adapter import BufferedBatches, PoolCall
from genfleet.workers.billiard_adapter import discarded
from genfleet.workers.delivery import Delivery, Event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """A batch function's answer: one event per request of its batch, in order, and the earlier requests (by
    task id) whose writes have ended since the last report."""

    now: list[Event]
    written: dict[str, Event] = field(default_factory=dict)
    outstanding: int = 0  # writes the pool process still holds after this report
    warm: list[str] | None = None  # the models the pool process holds now, most recently used first


class AcceleratorBatches(BufferedBatches):
    abstract = True
    _writing: dict[str, Delivery] | None = None  # deliveries whose images are being written, by task id
    _calls: set[PoolCall] | None = None  # pool calls neither of whose callbacks has run yet
    _suspects: list[Request] | None = None  # redelivered suspects waiting to run alone
    _qos: Any = None  # the consumer's prefetch counter (kombu.common.QoS), given as the consumer starts
    _lent = 0  # prefetch slots lent to it for messages being written

    @property
    def writing(self) -> dict[str, Delivery]:
        if self._writing is None:
            self._writing = {}
        return self._writing

    @property
    def calls(self) -> set[PoolCall]:
        if self._calls is None:
            self._calls = set()
        return self._calls

    @property
    def waiting_suspects(self) -> list[Request]:
        if self._suspects is None:
            self._suspects = []
        return self._suspects

    def drain(self) -> Callable[[], Report]:
        """The function a pool process runs to report its outstanding writes once they end (the task's class
        names it)."""
        raise NotImplementedError

    def holds(self, models: list[str]) -> None:
        """The models the pool process holds now, most recently used first (the task's class announces them)."""

    def hold_flush(self) -> bool:
        # a suspect waiting to run alone goes first; otherwise keep filling while the pool is busy: a bigger
        # batch costs the accelerator almost nothing more
        return bool(self.waiting_suspects) or (bool(self.calls) and self.buffered() < self.flush_every)

    def _finished(self) -> None:
        """The pool may have work to take: a suspect alone, once nothing else is running or being written; else
        the next batch; else a drain of the writes still out."""
        if self.waiting_suspects:
            if not self.calls:
                if self.writing:
                    self._drain()
                else:
                    self._run([self.waiting_suspects.pop(0)])
        elif self.buffered():
            self.flush_buffer()
        elif self.writing and not self.calls:
            self._drain()

    def _report(self, deliveries: list[Delivery], report: Report) -> None:
        """Hands each delivery its event, and passes on the models the pool process holds."""
        if report.warm is not None:
            self.holds(report.warm)
        for delivery, event in zip(deliveries, report.now, strict=True):
            delivery.report(event)
            if event is Event.writing:
                self.writing[delivery.id] = delivery
        for task_id, event in report.written.items():
            ended = self.writing.pop(task_id, None)
            if ended is not None:
                ended.report(event)
        self._lend()

    def _lend(self) -> None:
        """One more prefetch slot for each message being written, up to a batch (the module says why)."""
        if self._qos is None:
            return
        want = min(len(self.writing), self.flush_every)
        if want > self._lent:
            self._qos.increment_eventually(want - self._lent)
        elif want < self._lent:
            self._qos.decrement_eventually(self._lent - want)
        self._lent = want

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], on_return: Callable[[Any], None],
                on_error: Callable[[BaseException], None], **limits: Any) -> PoolCall:
        """A pool call, counted as running until one of its callbacks runs (or `reconnected` finds it
        discarded). The pool runs callbacks from the event loop, never within `apply_async`."""
        call: PoolCall = None

        def returned(value: Any) -> None:
            self.calls.discard(call)
            on_return(value)

        def failed(exc: BaseException) -> None:
            self.calls.discard(call)
            on_error(exc)

        call = self.pool_call(fn, args, returned, failed, **limits)
        self.calls.add(call)
        return call

    def reconnected(self, qos: Any = None) -> None:
        """The consumer (re)started, with a fresh prefetch counter (`qos`): after a lost broker connection,
        forget the pool calls the pool discarded (their messages come back from the broker, as the pool expects),
        restart the flush timer with the next message, and flush or drain what waits."""
        if qos is not None:
            self._qos, self._lent = qos, 0
            self._lend()
        self.forget_timer()
        gone = {c for c in self.calls if discarded(c)}
        if gone:
            log.warning("%d pool call(s) discarded with the broker connection; their messages come back", len(gone))
            self.calls.difference_update(gone)
        self._finished()

    def _drain(self) -> None:
        """No batch is waiting: a pool call that waits for the outstanding writes and reports them."""

        def on_return(report: Report | None) -> None:
            if report is None:
                on_error(RuntimeError("drain raised"))
                return
            self._report([], report)
            if not report.outstanding and self.writing:
                # the pool process holds no more writes, yet some were never reported: their process was
                # replaced without an error reaching us. Back to the queue, rather than draining forever.
                self._lose([], RuntimeError("writes vanished with their process"))
            self._finished()

        def on_error(exc: BaseException) -> None:
            self._lose([], exc)
            self._finished()

        self._submit(self.drain(), (), on_return, on_error, timeout=self.time_limit or self.app.conf.task_time_limit)

    def _lose(self, batch: list[Delivery], exc: BaseException) -> None:
        """The pool process died (or its call raised): its batch, and the writes it held, are lost; the batch's
        jobs are reported lost (they run alone when they come back)."""
        writing = list(self.writing.values())
        self.writing.clear()
        log.error("batch of %d lost (%r), with %d write(s) in flight; returning their messages to the queue",
                  len(batch), exc, len(writing))
        if batch:
            try:
                self.lost([d.id for d in batch])
            except Exception:  # Redis away: they will be batched as usual, which is still correct
                log.exception("could not mark the lost batch's jobs as suspects")
        for delivery in [*batch, *writing]:
            delivery.lost()
        self._lend()

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
        if fresh:
            self._run(fresh)
        self.waiting_suspects.extend(r for r in requests if r.id in suspects)
        self._finished()

    def _run(self, requests: list[Request]) -> PoolCall:
        conf = self.app.conf
        batch = [Delivery(r) for r in requests]
        for delivery in batch:
            delivery.batched()

        def on_return(report: Report | None) -> None:
            if report is None:  # the batch function raised (celery-batches logs it): nothing was recorded
                on_error(RuntimeError("batch function raised"))
                return
            self._report(batch, report)
            self._finished()

        def on_error(exc: BaseException) -> None:
            self._lose(batch, exc)
            self._finished()

        return self._submit(*self.batch_call(requests), on_return, on_error,
                            timeout=self.time_limit or conf.task_time_limit,
                            soft_timeout=self.soft_time_limit or conf.task_soft_time_limit)


class Reconnected(bootsteps.StartStopStep):
    """Calls `reconnected` on the worker's AcceleratorBatches tasks, with the consumer's new prefetch counter, each
    time the consumer (re)starts."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        for task in c.app.tasks.values():
            if isinstance(task, AcceleratorBatches):
                task.reconnected(c.qos)

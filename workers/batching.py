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
answers with None is released, not acked (its job is held by a live worker elsewhere; see shared/leases.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from genfleet.shared.leases import release

log = logging.getLogger(__name__)


class AcceleratorBatches(Batches):
    abstract = True
    _running = 0

    def _do_flush(self) -> None:
        if self._running and self._buffer.qsize() < self.flush_every:
            return  # keep filling: the pool is busy, and a bigger batch costs the accelerator almost nothing more
        super()._do_flush()

    def _finished(self) -> None:
        self._running -= 1
        if not self._buffer.empty():
            self._do_flush()

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
        self._running += 1
        conf = self.app.conf

        def on_return(result: Any) -> None:
            if result is None:  # the batch function raised (celery-batches logs it): nothing was recorded
                on_error(RuntimeError("batch function raised"))
                return
            for req, outcome in zip(requests, result, strict=True):
                if outcome is None:
                    release(req.message)
                else:
                    req.acknowledge()  # only now: every job of the batch is recorded and its images are stored
            self._finished()

        def on_error(exc: BaseException) -> None:
            log.error("batch of %d lost (%r); returning its messages to the queue", len(requests), exc)
            try:
                self.lost([r.id for r in requests])
            except Exception:  # Redis away: they will be batched as usual, which is still correct
                log.exception("could not mark the lost batch's jobs as suspects")
            for req in requests:
                req.reject(requeue=True)
            self._finished()

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None),
            callback=on_return,
            error_callback=on_error,
            timeout=self.time_limit or conf.task_time_limit,
            soft_timeout=self.soft_time_limit or conf.task_soft_time_limit,
        )

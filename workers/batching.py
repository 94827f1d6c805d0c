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
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

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

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        self._running += 1
        conf = self.app.conf

        def on_return(result: Any) -> None:
            if result is None:  # the batch function raised (celery-batches logs it): nothing was recorded
                on_error(RuntimeError("batch function raised"))
                return
            for req in requests:
                req.acknowledge()  # only now: every job of the batch is recorded and its images are stored
            self._finished()

        def on_error(exc: BaseException) -> None:
            log.error("batch of %d lost (%r); returning its messages to the queue", len(requests), exc)
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

"""Everything genfleet knows of celery-batches beyond its public API, in one place.

celery-batches buffers a task's messages and hands them to the pool as a list (`Batches.flush`, its documented
override point). genfleet needs four more things of it, which it keeps private:
- to hold a flush back while the pool is busy, so the next batch keeps filling (`_do_flush` is what its timer and
  its count call);
- how many messages wait in its buffer (`_buffer`);
- to forget its flush timer when the consumer cleared every timer on a lost connection (`_tref`);
- the worker's pool (`_pool`, which its strategy keeps) and its batch runner (`apply_batches_task`, which runs
  the batch function with Celery's tracing in the pool process).

`BufferedBatches` exposes them under public names. Each has a contract test in
tests/unit/test_batches_adapter.py that names it when an upgrade moves it, and `check()` runs as a worker
starts, so a celery-batches without them stops the worker at once, saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from genfleet.shared.errors import MissingInterface

PoolCall = Any  # billiard.pool.ApplyResult


class BufferedBatches(Batches):
    """celery-batches' `Batches`, seen through the names genfleet uses."""

    abstract = True

    def hold_flush(self) -> bool:
        """Whether a flush that the timer or the count asked for waits (a subclass says)."""
        return False

    def _do_flush(self) -> None:
        if self.hold_flush():
            return
        super()._do_flush()

    def flush_buffer(self) -> None:
        """Hands what the buffer holds to `flush`, unless `hold_flush` says to wait."""
        self._do_flush()

    def buffered(self) -> int:
        """Messages waiting in the buffer."""
        return int(self._buffer.qsize())

    def forget_timer(self) -> None:
        """The consumer cleared its timer (a lost connection): the next message starts a new flush timer."""
        self._tref = None

    def pool_call(self, fn: Callable[..., Any], args: tuple[Any, ...], callback: Callable[[Any], None],
                  error_callback: Callable[[BaseException], None], **limits: Any) -> PoolCall:
        """Runs `fn(*args)` in the worker's pool; the pool runs one callback from the event loop."""
        return self._pool.apply_async(fn, args, callback=callback, error_callback=error_callback, **limits)

    def batch_call(self, requests: Collection[Request]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The function and arguments that run this task's batch function over `requests` in a pool process."""
        return apply_batches_task, (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None)


def check() -> None:
    """Raises MissingInterface, naming it, when this celery-batches lacks what `BufferedBatches` uses."""
    if not callable(getattr(Batches, "_do_flush", None)):
        raise MissingInterface("celery-batches: Batches has no `_do_flush` (holding a flush while the pool is busy)")
    probe = Batches()
    for name in ("_buffer", "_tref", "_pool"):
        if not hasattr(probe, name):
            raise MissingInterface(f"celery-batches: a Batches task has no `{name}`")
    if not callable(getattr(probe._buffer, "qsize", None)):
        raise MissingInterface("celery-batches: Batches' `_buffer` has no `qsize`")
    if not callable(getattr(SimpleRequest, "from_request", None)):
        raise MissingInterface("celery-batches: SimpleRequest has no `from_request`")

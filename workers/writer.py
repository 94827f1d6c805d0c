"""PNG encoding and storage writes, off the sampling thread, through a bounded backlog.

A write blocks once `capacity` jobs wait to be written (`Backlog`), so when storage falls behind, sampling
slows down instead of memory growing. `Writes` is what the runner asks of a writer: `ThreadWrites` writes on
threads of the sampling process; `ProcessWrites` (workers/write_process.py) in a process of its own, so its
Python work never holds the sampling thread's GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any, Generic, Protocol, TypeVar

from genfleet.shared.schema import Job
from genfleet.workers.recording import Recording, Slot, write_job
from genfleet.workers.threads import write_pool

T = TypeVar("T")


class Backlog:
    """At most `capacity` writes in hand. `take` blocks while all are taken, so when storage falls behind,
    sampling (and with it the worker's intake of messages) slows down instead of memory growing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self.pending = 0
        self.high_water = 0  # most writes ever in hand at once: tests read it

    def take(self) -> None:
        self._free.acquire()
        with self._lock:
            self.pending += 1
            self.high_water = max(self.high_water, self.pending)

    def give(self, _done: object = None) -> None:
        """Frees a slot: as a future's done callback, or when a write could not be started."""
        with self._lock:
            self.pending -= 1
        self._free.release()


class BoundedWriter:
    def __init__(self, threads: int, capacity: int) -> None:
        self._pool = write_pool(threads)
        self.backlog = Backlog(capacity)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        self.backlog.take()  # blocks while the backlog is full: backpressure
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:  # shut down: nothing was queued, so nothing holds the slot
            self.backlog.give()
            raise
        future.add_done_callback(self.backlog.give)
        return future

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class Writes(Protocol):
    backlog: Backlog

    def write(self, job: Job, slots: list[Slot], timings: dict[str, float], ctx: Recording) -> Future[Job]:
        """Starts writing a job (blocking while `capacity` writes wait); its future is the job as recorded."""
        ...

    def shutdown(self) -> None: ...


class ThreadWrites(BoundedWriter):
    """Writes on this process's threads, with the sampling process's own storage and job store."""

    def write(self, job: Job, slots: list[Slot], timings: dict[str, float], ctx: Recording) -> Future[Job]:
        return self.submit(write_job, job, slots, timings, ctx)


class Outstanding(Generic[T]):
    """Writes this process started and has not yet reported, by task id. The worker's main process acknowledges
    a message only once its write is reported, so a write may outlive the batch that started it (and overlap
    the sampling of the next) without a message being acknowledged before its images are stored."""

    def __init__(self) -> None:
        self._futures: dict[str, Future[T]] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, task_id: str, future: Future[T]) -> None:
        self._futures[task_id] = future

    def collect(self) -> dict[str, T | BaseException]:
        """The writes that have ended since the last call: each one's result, or what it raised."""
        done = {task_id: f for task_id, f in self._futures.items() if f.done()}
        for task_id in done:
            del self._futures[task_id]
        return {task_id: f.exception() or f.result() for task_id, f in done.items()}

    def wait(self, timeout_s: float | None = None) -> dict[str, T | BaseException]:
        """Waits for every outstanding write (at most `timeout_s`), then collects."""
        wait(list(self._futures.values()), timeout=timeout_s)
        return self.collect()

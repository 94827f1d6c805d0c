"""PNG encoding and storage writes, off the sampling thread, through a bounded queue.

`submit` blocks once `capacity` jobs wait to be written, so when storage falls behind, sampling (and with it
the worker's intake of messages) slows down instead of memory growing. `Writes` is what the runner asks of a
writer: `ThreadWrites` writes on threads of the sampling process; `ProcessWrites` (workers/write_process.py)
in a process of its own, so its Python work never holds the sampling thread's GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Generic, Protocol, TypeVar

from genfleet.shared.schema import Job
from genfleet.workers.recording import Recording, Slot, write_job

T = TypeVar("T")


class BoundedWriter:
    def __init__(self, threads: int, capacity: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="genfleet-write")
        self._slots = threading.BoundedSemaphore(capacity)
        self.capacity = capacity
        self._pending = 0
        self.high_water = 0  # most jobs ever waiting at once: tests and metrics read it
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        self._slots.acquire()  # blocks while the queue is full: backpressure
        with self._lock:
            self._pending += 1
            self.high_water = max(self.high_water, self._pending)
        future = self._pool.submit(fn, *args)
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
        self._slots.release()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class Writes(Protocol):
    capacity: int
    high_water: int

    @property
    def pending(self) -> int: ...

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

"""Scoring, PNG encoding and storage writes, off the sampling thread, through a bounded queue.

`submit` blocks once `capacity` jobs wait to be written, so when storage falls behind, sampling (and with it
the worker's intake of messages) slows down instead of memory growing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

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

    def submit(self, fn: Callable[..., T], *args) -> Future[T]:
        self._slots.acquire()  # blocks while the queue is full: backpressure
        with self._lock:
            self._pending += 1
            self.high_water = max(self.high_water, self._pending)
        future = self._pool.submit(fn, *args)
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1
        self._slots.release()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)

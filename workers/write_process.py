"""Writes in a process of their own (`GENFLEET_WRITE_IN=process`).

Encoding, uploading and recording a job is mostly Python (botocore signs and sends each PUT, redis-py and
pydantic record the job), and Python holds the GIL. On writer threads, that is the sampling thread's GIL: each
time a pipeline op releases it and wants it back, it may wait for a writer (up to the interpreter's 5 ms switch
interval), and a diffusers loop on a GPU is a long string of short ops launched from Python. Here a writer
process, spawned by the pool process and dying with it, runs `write_job` on threads of its own: the sampling
process only pickles each job's images into a socket.

The pool process keeps the bound (`capacity` writes in hand) and one future per write, settled by a reader
thread from the writer's replies. If the writer process dies, the writes it held fail with `WriterLost`, so
their messages go back to the queue (workers/app.py), and the next write starts a new one. Its writes are
idempotent like any other (workers/recording.py).
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from genfleet.shared.schema import Job
from genfleet.shared.settings import Settings
from genfleet.workers.recording import Recording, Slot
from genfleet.workers.threads import PRCTL, write_pool
from genfleet.workers.writer import Backlog

log = logging.getLogger("genfleet.workers.write_process")  # by name: the writer runs this module as __main__

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WriterLost(RuntimeError):
    """The writer process exited while it held this write."""


class _Child:
    """One writer process and the socket to it."""

    def __init__(self, settings: Settings, threads: int) -> None:
        ours, theirs = socket.socketpair()
        # A whole-worker failpoint in the writer takes the worker's main process and this pool process with it.
        env = {**os.environ, "GENFLEET_WORKER_PIDS": f"{os.getppid()},{os.getpid()}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "genfleet.workers.write_process", str(theirs.fileno()), str(threads)],
            pass_fds=[theirs.fileno()], env=env)
        theirs.close()
        self.sock = ours  # kept for `shutdown(SHUT_WR)`: the writer then sees its input end, and replies still come
        self.conn = Connection(os.dup(ours.fileno()))
        self.conn.send(settings)  # first: the pool process's settings, secrets included, never on a command line
        self.send_lock = threading.Lock()


class ProcessWrites:
    """`Writes` (workers/writer.py) through a writer process."""

    def __init__(self, settings: Settings, threads: int, capacity: int) -> None:
        self.settings, self.threads = settings, threads
        self.backlog = Backlog(capacity)
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[_Child, Future[Job]]] = {}
        self._ids = itertools.count()
        self._child: _Child | None = None
        self.started = 0  # writer processes started: tests read it

    def start(self) -> None:
        """Starts the writer process now (it imports for about a second), not with the first write."""
        with self._lock:
            self._current()

    def _current(self) -> _Child:
        if self._child is None or self._child.proc.poll() is not None:
            self._child = _Child(self.settings, self.threads)
            self.started += 1
            threading.Thread(target=self._read, args=(self._child,), name="genfleet-write-replies",
                             daemon=True).start()
        return self._child

    def write(self, job: Job, slots: list[Slot], timings: dict[str, float], ctx: Recording) -> Future[Job]:
        self.backlog.take()  # blocks while `capacity` writes are in hand: backpressure
        try:
            with self._lock:
                call_id, child = next(self._ids), self._current()
                future: Future[Job] = Future()
                self._calls[call_id] = (child, future)
        except BaseException:  # no writer could be started: the batch fails, and its messages go back
            self.backlog.give()
            raise
        future.add_done_callback(self.backlog.give)
        try:
            with child.send_lock:
                child.conn.send((call_id, job, slots, timings))
        except OSError as e:  # it died before the reader saw it: the reader fails this write with the rest
            log.warning("writer process gone while sending a write: %r", e)
        return future

    def _read(self, child: _Child) -> None:
        """Settles each write as its reply comes; when the writer process goes, fails every write it held."""
        try:
            while True:
                call_id, ok, value = child.conn.recv()
                with self._lock:
                    _, future = self._calls.pop(call_id)
                future.set_result(value) if ok else future.set_exception(value)
        except (EOFError, OSError):
            pass
        except Exception:  # a reply that would not unpickle: the channel can no longer be trusted
            log.exception("unreadable reply from the writer process; replacing it")
            child.proc.kill()
        code = child.proc.wait()
        child.conn.close()
        child.sock.close()
        with self._lock:
            lost = [(i, f) for i, (c, f) in self._calls.items() if c is child]
            for call_id, _ in lost:
                del self._calls[call_id]
            if self._child is child:
                self._child = None
        if lost:
            log.error("writer process exited (%s) with %d write(s) in hand", code, len(lost))
        for _, future in lost:
            future.set_exception(WriterLost(f"the writer process exited ({code}) during this write"))

    def shutdown(self) -> None:
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.sock.shutdown(socket.SHUT_WR)  # the writer finishes what it holds, replies, then exits
            child.proc.wait()


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the pool process dies, as it would in a pod that died whole (Linux; elsewhere the writer
    sees its socket close and exits after the writes in hand)."""
    if PRCTL is None:
        return
    PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the call took effect
        os._exit(1)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def serve(conn: Connection, threads: int, ctx: Recording) -> None:
    """Runs each write it receives on one of `threads`, replying (id, ok, job or exception) as each ends."""
    from genfleet.workers.recording import write_job

    send_lock = threading.Lock()

    def reply(call_id: int, future: Future[Job]) -> None:
        exc = future.exception()
        answer: tuple[int, bool, Any] = (call_id, False, _picklable(exc)) if exc else (call_id, True, future.result())
        try:
            with send_lock:
                conn.send(answer)
        except OSError:  # the pool process is gone: nobody is waiting for this reply
            pass

    with write_pool(threads) as pool:
        while True:
            try:
                call_id, job, slots, timings = conn.recv()
            except (EOFError, OSError):
                break
            pool.submit(write_job, job, slots, timings, ctx).add_done_callback(partial(reply, call_id))


def main(argv: list[str]) -> None:
    fd, threads = int(argv[0]), int(argv[1])
    _die_with_parent(int(os.environ["GENFLEET_WORKER_PIDS"].split(",")[1]))
    from genfleet.shared import logs
    from genfleet.workers.recording import open_recorder

    conn = Connection(fd)
    settings: Settings = conn.recv()
    logs.configure(settings.log_format)
    log.info("writer process %d writes for pool process %d", os.getpid(), os.getppid())
    serve(conn, threads, open_recorder(settings))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Failpoints: the places where tests kill a process with SIGKILL, exactly there, as a crash would.

`GENFLEET_FAILPOINTS` names the points to crash at, comma-separated; unset (always, in production) a failpoint
is a set lookup. The fault is the real one, not a polite exception: the process vanishes mid-step, leaving
whatever it had written so far, and the recovery under test has to cope with that state.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(p.strip() for p in os.environ.get("GENFLEET_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str, whole_worker: bool = False) -> None:
    """SIGKILLs this process at `name` if armed; `whole_worker` (in a worker's pool process, or its writer
    process) takes the worker's other processes first, as an OOM kill of the pod or a lost node would."""
    if name in _ARMED:
        if whole_worker:
            for pid in _worker_pids():
                os.kill(pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def _worker_pids() -> list[int]:
    # A pool process's parent is the worker's main process; a writer process is told both (workers/write_process.py).
    given = os.environ.get("GENFLEET_WORKER_PIDS")
    return [int(pid) for pid in given.split(",")] if given else [os.getppid()]

"""The worker's threads as the kernel knows them: the writing threads' pool, named so that `top -H`, py-spy and
the kernel's per-thread CPU accounting (/proc/PID/task/TID/comm) tell them from the sampling ones. Python 3.11
names threads for itself only; the kernel's name is set with prctl(PR_SET_NAME), Linux only, at most 15 bytes.
`PRCTL` is libc's prctl, or None where there is none (workers/write_process.py asks it for a parent-death
signal)."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

WRITE = "genfleet-write"  # the threads that encode, sign and store images: `genfleet bench` counts them apart
_PR_SET_NAME = 15


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # this process's libc
    except (OSError, AttributeError):
        return None


PRCTL = _prctl()


def name_this_thread(name: str) -> None:
    """Gives the calling thread `name` (cut to 15 bytes) in the kernel; nothing where that cannot be done."""
    if PRCTL is not None:
        PRCTL(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def write_pool(threads: int) -> ThreadPoolExecutor:
    """The threads that write jobs (in the sampling process or a writer process), each named `WRITE`."""
    return ThreadPoolExecutor(threads, thread_name_prefix=WRITE, initializer=name_this_thread, initargs=(WRITE,))


def kernel_name(pid: int, tid: int) -> str | None:
    """A thread's name as the kernel has it, or None once it is gone (or off Linux)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None

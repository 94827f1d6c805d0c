"""Failpoints: the places where tests kill a process with SIGKILL, exactly there, as a crash would.

`GENFLEET_FAILPOINTS` names the points to crash at, comma-separated; unset (always, in production) a failpoint
is a set lookup. The fault is the real one, not a polite exception: the process vanishes mid-step, leaving
whatever it had written so far, and the recovery under test has to cope with that state.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(p.strip() for p in os.environ.get("GENFLEET_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)

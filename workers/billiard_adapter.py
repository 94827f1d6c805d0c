"""Everything genfleet knows of billiard beyond its public API, in one place.

When the broker connection is lost, Celery's prefork pool discards every call not yet handed to a process, and
neither of that call's callbacks ever runs (workers/batching.py, `reconnected`). billiard says so only by
dropping the call from its pool's cache: an `ApplyResult` whose `_job` is no longer in its `_cache` was
discarded. The contract test is in tests/unit/test_billiard_adapter.py; `check()` runs as a worker starts.
"""

from __future__ import annotations

from typing import Any

from billiard.pool import ApplyResult

from genfleet.shared.errors import MissingInterface


def discarded(call: Any) -> bool:
    """Whether the pool has dropped `call` (an ApplyResult) without running it or either of its callbacks."""
    return call._job not in call._cache


def check() -> None:
    """Raises MissingInterface, naming it, when this billiard lacks what `discarded` uses."""
    cache: dict[Any, Any] = {}
    call = ApplyResult(cache, None)
    for name in ("_job", "_cache"):
        if not hasattr(call, name):
            raise MissingInterface(f"billiard: ApplyResult has no `{name}` (finding calls a lost connection discarded)")
    if discarded(call):
        raise MissingInterface("billiard: a pending ApplyResult is not in its pool's cache under `_job`")

"""What one job got from a step that runs for a group of jobs but may fail for each on its own: `Ok(value)` or
`Failed(error)`.

`attempt` turns an exception into a `Failed`, except running out of time (Celery's soft time limit): that stops
the whole batch, and runner.run_batch alone handles it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, ParamSpec, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class Ok(Generic[T]):
    value: T


@dataclass(frozen=True)
class Failed:
    error: Exception

    @property
    def reason(self) -> str:
        """What the job's record says."""
        return f"{type(self.error).__name__}: {self.error}"


def attempt(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Ok[T] | Failed:
    try:
        return Ok(fn(*args, **kwargs))
    except SoftTimeLimitExceeded:
        raise
    except Exception as e:
        return Failed(e)

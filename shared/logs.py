"""Logging for every genfleet process: one JSON object a line (python-json-logger), or plain text.

Job, batch and tenant ids travel as `extra=` fields (`log.info("...", extra={"job_id": ...})`) and come out
as keys of their own, so a log pipeline can filter on them without parsing messages.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from pythonjsonlogger.json import JsonFormatter

_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    return logging.Formatter(_TEXT)


def configure(fmt: str = "json", level: str | int = "INFO") -> None:
    """Routes every logger (uvicorn's and Celery's included) through one handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        if logger.handlers:  # configured by its library: through our handler instead. A logger it switched off
            logger.handlers[:] = []  # (uvicorn's --no-access-log: no handler, no propagation) stays off.
            logger.propagate = True


def configure_celery_logging(fmt: str) -> None:
    """Celery configures no logging of its own once a `setup_logging` receiver exists; this is it."""

    def setup(loglevel: str | None = None, **_: Any) -> None:
        configure(fmt, loglevel or "INFO")

    signals.setup_logging.connect(setup, weak=False)

"""What every POST goes through before anything is recorded: the model is served, the webhook target is
safe, and the Idempotency-Key flow (see api/idempotency.py) around the work that queues."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from genfleet.api.auth import Caller
from genfleet.api.idempotency import fingerprint
from genfleet.shared.settings import Settings
from genfleet.shared.webhooks import UnsafeTarget, check_target

T = TypeVar("T")  # a Job or a Batch: anything with an `id`


def invalid(loc: tuple, value, msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "input": value, "msg": msg}])


def check_model(model: str | None, settings: Settings, loc: tuple = ("body", "model")) -> str:
    chosen = model or settings.model
    if chosen not in settings.models:
        raise invalid(loc, model, f"model {chosen!r} is not served here; choose one of {settings.models}")
    return chosen


def check_webhook(url, settings: Settings, loc: tuple = ("body", "webhook_url")) -> None:
    if url is None:
        return
    if not settings.webhook_secret:
        raise invalid(loc, str(url), "webhooks are off on this server (GENFLEET_WEBHOOK_SECRET is unset)")
    try:
        # no DNS lookup here: the deliverer resolves and checks again right before each send
        check_target(str(url), settings.webhook_allow_private, resolve=False)
    except UnsafeTarget as e:
        raise invalid(loc, str(url), str(e)) from None


def idempotent(request: Request, who: Caller, key: str | None, body: str,
               make: Callable[[], T]) -> tuple[str, T | None]:
    """Runs `make` once per (tenant, key, body): (its resource's id, what it made), or, for a repeat,
    (the first request's resource id, None)."""
    if key is None:
        made = make()
        return str(made.id), made
    ledger = request.app.state.idempotency
    fp = fingerprint(request.url.path, body)
    earlier = ledger.begin(who.tenant, key, fp)
    if earlier is not None:
        return earlier, None
    try:
        made = make()
    except BaseException:
        ledger.abandon(who.tenant, key)
        raise
    ledger.complete(who.tenant, key, fp, str(made.id))
    return str(made.id), made

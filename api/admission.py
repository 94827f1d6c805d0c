"""What every POST goes through before anything is recorded: the model is served, the webhook target is
safe, and the Idempotency-Key flow (see api/idempotency.py) around the work that queues."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from api.auth import Caller
from api.idempotency import fingerprint
from shared.settings import Settings
from shared.webhooks import UnsafeTarget, check_target


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


def idempotent(request: Request, who: Caller, key: str | None, body: str, make: Callable[[], str]) -> tuple[str, bool]:
    """(resource id, replayed): runs `make` once per (tenant, key, body); a repeat returns the first result."""
    if key is None:
        return make(), False
    ledger = request.app.state.idempotency
    fp = fingerprint(request.url.path, body)
    earlier = ledger.begin(who.tenant, key, fp)
    if earlier is not None:
        return earlier, True
    try:
        made = make()
    except BaseException:
        ledger.abandon(who.tenant, key)
        raise
    ledger.complete(who.tenant, key, fp, made)
    return made, False

"""How the API refuses input: 422 with one entry per field at fault, 413 for a body over the limit.

FastAPI's stock 422 echoes each offending input back, whole: a 10 MB prompt comes back as 10 MB, and a
non-finite number (`NaN`, or `1e309`, which JSON parsing turns into infinity) cannot be written as JSON at all,
so the error became a 500. Here each echoed input is cut to a short preview and made JSON-safe.

`BodyLimit` is plain ASGI middleware: a body over `GENFLEET_MAX_BODY_BYTES` gets 413 before any of it is parsed,
from its Content-Length when it has one, else as the streamed bytes pass the limit.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREVIEW_CHARS = 200


def _safe(value: Any) -> Any:
    """A JSON-safe, bounded stand-in for an input that was refused."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return f"{value[:PREVIEW_CHARS]}... ({len(value)} characters in all)" if len(value) > PREVIEW_CHARS else value
    # anything else (objects, lists, numbers, None): as JSON, with non-finite numbers as strings, cut if long
    encoded = json.dumps(jsonable_encoder(value), default=str, allow_nan=True)
    return _safe(encoded) if len(encoded) > PREVIEW_CHARS else json.loads(encoded, parse_constant=str)


def _entry(err: dict[str, Any]) -> dict[str, Any]:
    entry = {k: v for k, v in err.items() if k not in ("input", "ctx", "url")}
    if "input" in err:
        entry["input"] = _safe(err["input"])
    if "ctx" in err:
        entry["ctx"] = {k: _safe(v) if isinstance(v, (int, float, str)) else str(v) for k, v in err["ctx"].items()}
    return entry


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for this class only
    return JSONResponse({"detail": [_entry(e) for e in exc.errors()]}, status_code=422)


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis away (restarting, failing over) anywhere in a request: 503 and a retry, never a 500. Admission
    (api/admission.py) handles its own, to refund and undo what it began; this covers the rest, such as the
    backpressure check before it."""
    return JSONResponse({"detail": f"queue unavailable: {type(exc).__name__}: {exc}"}, status_code=503,
                        headers={"Retry-After": "5"})


def too_large(limit: int, size: int | None) -> dict[str, Any]:
    got = f"{size} bytes" if size is not None else "more"
    return {"detail": [{"type": "too_large", "loc": ["body"], "input": None,
                        "msg": f"the request body is {got}; the limit is {limit} bytes (GENFLEET_MAX_BODY_BYTES)"}]}


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send, int(length))
            return
        if length is not None or b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)  # no body, or the server holds it to its declared length
            return
        # No length (chunked): read it here, up to the limit, then hand the app what was read.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, None)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body, what the client does next (a disconnect): a stream listens for it
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int | None) -> None:
        response = JSONResponse(too_large(self.max_bytes, size), status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)

"""OpenAI's error envelope for the OpenAI-compatible routes: `{"error": {"message", "type", "param", "code"}}`.

The routes use `OpenAIRoute` as their route class (FastAPI's documented hook for one router's own handling), so
their refusals take OpenAI's shape and status codes, and the SDKs raise their own classes (`BadRequestError`
with `param` naming the field, `AuthenticationError`, `RateLimitError`) while `/v1/jobs` keeps genfleet's.
Validation, which FastAPI answers with 422 elsewhere, is OpenAI's 400. `param` uses the OpenAI request's names:
a job's `width` or `height` is the request's `size`, its `num_images` is `n`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import redis
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from genfleet.api.errors import PREVIEW_CHARS

# a job's fields, by the OpenAI request's names for them
PARAMS = {"width": "size", "height": "size", "num_images": "n"}
TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}
CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 503: "server_overloaded", 504: "timeout"}


class OpenAIError(Exception):
    """A refusal in OpenAI's words; `extra` goes into the error object beside the standard fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers, self.extra = headers or {}, extra


def envelope(e: OpenAIError) -> JSONResponse:
    error = {"message": e.message, "type": TYPES.get(e.status, "server_error"), "param": e.param,
             "code": e.code or CODES.get(e.status), **e.extra}
    return JSONResponse({"error": error}, e.status, e.headers)


def param_of(loc: tuple[Any, ...]) -> str | None:
    """The OpenAI request's name for the field at `loc` (("body", "width") -> "size")."""
    fields = [str(part) for part in loc if part not in ("body", "query", "header")]
    return PARAMS.get(fields[0], fields[0]) if fields else None


def from_validation(exc: RequestValidationError) -> OpenAIError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = param_of(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        message = f"genfleet cannot honour {param!r}: leave it out"
    else:
        message = "; ".join(f"{param_of(tuple(e.get('loc', ()))) or 'request'}: {e.get('msg')}" for e in errors)
    return OpenAIError(400, message[:PREVIEW_CHARS * 5], param)


def from_http(exc: HTTPException) -> OpenAIError:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return OpenAIError(exc.status_code, detail, headers=dict(exc.headers or {}))


class OpenAIRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as e:
                return envelope(e)
            except RequestValidationError as e:
                return envelope(from_validation(e))
            except HTTPException as e:
                return envelope(from_http(e))
            except redis.RedisError as e:
                return envelope(OpenAIError(503, f"queue unavailable: {type(e).__name__}",
                                            headers={"Retry-After": "5"}))

        return handle

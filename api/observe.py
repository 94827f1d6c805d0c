"""Request metrics as plain ASGI middleware (Starlette's BaseHTTPMiddleware costs a task and a stream per
request, a good part of a fast request's time): count and time by route template and status."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genfleet.shared import metrics


class ObserveRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = route.path if route is not None else "unmatched"  # templates, not ids: bounded labels
            metrics.HTTP_REQUESTS.labels(path, scope["method"], str(status[0])).inc()
            metrics.HTTP_LATENCY.labels(path, scope["method"]).observe(time.perf_counter() - start)

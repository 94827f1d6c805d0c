"""`/ui`: the web page, static files served as they are (no build step), under a Content-Security-Policy that
allows no inline script and no script from anywhere but here.

The page is a client of the public API like any other (api/ui/api.js): it sends the key a person types in as a
Bearer header, from the tab's session storage, never in a URL or a cookie.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genfleet.shared.settings import Settings

UI_DIR = Path(__file__).resolve().parent / "ui"


def image_origins(settings: Settings) -> str:
    """Where presigned image links point, for `img-src`: the S3 endpoint's origin, AWS's when none is set; a
    local folder's images come through the API itself."""
    if not settings.storage_url.startswith("s3://"):
        return ""
    if settings.s3_endpoint_url:
        url = urlparse(settings.s3_endpoint_url)
        return f"{url.scheme}://{url.netloc}"
    return "https://*.amazonaws.com"


def policy(settings: Settings) -> str:
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
        f"img-src 'self' blob: {image_origins(settings)}".rstrip(), "base-uri 'none'", "form-action 'none'",
        "frame-ancestors 'none'"])


class WithHeaders:
    """Adds fixed headers to every response of the ASGI app it wraps."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount(app: FastAPI, settings: Settings) -> None:
    headers = {"Content-Security-Policy": policy(settings), "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer"}  # a presigned link is a credential: keep it out of Referer
    app.mount("/ui", WithHeaders(StaticFiles(directory=UI_DIR, html=True), headers), name="ui")

"""A real headless browser for the web page's tests: Debian's chromium, driven by Playwright (whose own browser
download cannot work here). Without chromium the tests skip and say why; under CI a skip fails the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = os.environ.get("GENFLEET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


# Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in the thread while it is
# open, and a test on the same pytest-xdist runner that calls asyncio.run() after a browser test would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; or set GENFLEET_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium refuses its sandbox
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    yield page
    context.close()

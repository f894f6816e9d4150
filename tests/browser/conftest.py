"""Browser tier: Debian's Chromium driven by Playwright (async API, on the test's event loop).

The seed's pages (``seed_pages/*.html``, verbatim: §4.3's ``fetch.html`` and ``xhr.html``, §9.2's
chat page ``robbit.html``) are served from a second origin, a tiny Tornado app on another port,
with only the one URL each calls (the API's ``/user``, the chat's ``/message``) replaced by the
live test server's, so every click in them is a real cross-origin request the browser checks
against the API's CORS headers, and the chat page's WebSocket a cross-origin handshake.

Without ``/usr/bin/chromium`` or the ``playwright`` package the tier is skipped with the reason;
with ``MSERVICES_TEST_REQUIRE_SERVICES=1`` it fails instead. Browsers are never downloaded
(``playwright install`` is not needed: the system Chromium is launched). Set
``MSERVICES_TEST_SCREENSHOTS`` to a directory to keep a screenshot of each page's final state.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tornado.httpserver import HTTPServer
from tornado.web import Application, HTTPError, RequestHandler

from tests.conftest import REQUIRE_SERVICES, serve_app

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium tries to reach Google's services on a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SEED_PAGES = Path(__file__).resolve().parent / "seed_pages"
SEED_API_URL = "http://localhost:8000/user"
"""The API URL hard-coded in the seed's §4.3 pages."""
SEED_WS_URL = "ws://localhost:8000/message"
"""The chat WebSocket URL hard-coded in the seed's §9.2 page."""
SEED_URLS = {"fetch.html": SEED_API_URL, "robbit.html": SEED_WS_URL, "xhr.html": SEED_API_URL}
"""Each seed page and the one URL in it that is replaced."""
TIMEOUT_MS = 10_000


def browser_unavailable() -> str | None:
    """Why the browser tier cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (dev extra)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian package chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless system Chromium, closed after the test; skip (or fail) when unavailable."""
    problem = browser_unavailable()
    if problem is not None:
        reason = f"browser tests need Chromium and Playwright: {problem}"
        if REQUIRE_SERVICES:
            pytest.fail(f"MSERVICES_TEST_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


class SeedPageHandler(RequestHandler):
    """``GET /<name>.html``: a seed page with its URL pointed at the server under test."""

    def initialize(self, api_url: str, ws_url: str) -> None:
        """Receive the URLs that replace the seed's ``http://localhost:8000/user`` and
        ``ws://localhost:8000/message``."""
        self.api_url = api_url
        self.ws_url = ws_url

    def get(self, name: str) -> None:
        """Serve ``seed_pages/<name>.html``."""
        path = SEED_PAGES / f"{name}.html"
        if not path.is_file():
            raise HTTPError(404)
        html = path.read_text(encoding="utf-8")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html.replace(SEED_API_URL, self.api_url).replace(SEED_WS_URL, self.ws_url))


class NoFaviconHandler(RequestHandler):
    """``GET /favicon.ico``: nothing, so the console holds only what the page itself caused."""

    def get(self) -> None:
        """Answer 204."""
        self.set_status(204)


SeedSite = Callable[[str], Awaitable[str]]


def check_seed_pages() -> None:
    """Each seed page calls its seed URL exactly once (the one thing replaced)."""
    pages = sorted(SEED_PAGES.glob("*.html"))
    assert [page.name for page in pages] == sorted(SEED_URLS)
    for page in pages:
        url = SEED_URLS[page.name]
        calls = page.read_text(encoding="utf-8").count(url)
        assert calls == 1, f"{page.name} calls {url} {calls} times, not once"


@pytest.fixture
async def seed_site() -> AsyncIterator[SeedSite]:
    """Start the seed pages' origin for a server's base URL; returns the origin's base URL."""
    check_seed_pages()
    servers: list[HTTPServer] = []

    async def start(api_base_url: str) -> str:
        app = Application(
            [
                (
                    r"/(\w+)\.html",
                    SeedPageHandler,
                    {
                        "api_url": f"{api_base_url}/user",
                        "ws_url": "ws" + api_base_url.removeprefix("http") + "/message",
                    },
                ),
                (r"/favicon\.ico", NoFaviconHandler),
            ]
        )
        server, base_url = await serve_app(app)
        servers.append(server)
        assert base_url != api_base_url
        return base_url

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
            await server.close_all_connections()


@dataclass
class WatchedPage:
    """A page in its own browser context, with what its console and network showed."""

    page: Page
    console: list[str] = field(default_factory=list)
    preflights: list[dict[str, Any]] = field(default_factory=list)
    """CDP ``Network.responseReceived`` of CORS preflights (Playwright does not report them)."""
    cors_errors: list[dict[str, Any]] = field(default_factory=list)
    """CDP ``Network.loadingFailed`` events that carry a CORS error."""

    def cors_console_errors(self) -> list[str]:
        """Console messages in which the browser reports a CORS refusal."""
        return [text for text in self.console if "CORS" in text]

    async def keep_screenshot(self, name: str) -> None:
        """Save ``<name>.png`` into ``MSERVICES_TEST_SCREENSHOTS`` when that is set."""
        directory = os.environ.get("MSERVICES_TEST_SCREENSHOTS")
        if directory:  # Playwright creates the directory
            await self.page.screenshot(path=str(Path(directory) / f"{name}.png"))

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait (bounded) until ``condition`` holds: CDP events arrive on their own schedule."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT_MS / 1000
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; console: {self.console}")
            await asyncio.sleep(0.02)


OpenPage = Callable[[str], Awaitable[WatchedPage]]


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """Open a URL in a fresh context (no preflight cache shared between tests), watched."""
    contexts = []

    async def open_url(url: str) -> WatchedPage:
        context = await browser.new_context()
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        watched = WatchedPage(page)
        page.on("console", lambda message: watched.console.append(message.text))
        cdp = await context.new_cdp_session(page)

        def on_response(event: dict[str, Any]) -> None:
            if event.get("type") == "Preflight":
                watched.preflights.append(event)

        def on_failure(event: dict[str, Any]) -> None:
            if event.get("corsErrorStatus"):
                watched.cors_errors.append(event)

        cdp.on("Network.responseReceived", on_response)
        cdp.on("Network.loadingFailed", on_failure)
        await cdp.send("Network.enable")
        await page.goto(url)
        return watched

    try:
        yield open_url
    finally:
        for context in contexts:
            await context.close()

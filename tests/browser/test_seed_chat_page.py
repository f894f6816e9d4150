"""The seed's §9.2 chat page (``seed_pages/robbit.html``), verbatim, in Chromium against the real
server.

The page opens ``new WebSocket('ws://localhost:8000/message')`` (here the test server's URL; no
subprotocol), appends every frame it receives with ``innerHTML += '<br>' + data``, and sends what
is typed as it is. mservices answers such a socket in the seed's plain-text lines, in the
language of the browser (``server/realtime/plain.py``): a Chinese browser sees exactly the seed's
``alice 进入聊天室`` / ``alice 说: hello`` / ``bob 离开聊天室``, an English one
``alice says: hello``; a late comer gets the room's history as the same lines, and a hostile
message stays text on the page.

The page is served from a second origin, allowed in ``ws_origins`` as a deployment serving it
elsewhere would allow it; each browser logged in on mservices first (the socket takes the
session cookie, which the browser sends because both origins are the same site).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from repositories.users import UserRepository
from server.app import make_app
from server.permissions import CHAT_USE
from server.services import Services, open_services
from tests.browser.conftest import TIMEOUT_MS, SeedSite, WatchedPage, browser_unavailable
from tests.conftest import REQUIRE_SERVICES, make_settings
from tests.grants import grant_in_session

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, Page  # noqa: E402 - needs the check

HOSTILE = "<img src=x onerror=alert(1)>"
LOGIN_FORM = {
    "zh-CN": ("用户名", "密码", "登录"),
    "en-US": ("User name", "Password", "Log in"),
}
RECORD_ALERTS = "window.__alerts = []; window.alert = (m) => { window.__alerts.push(String(m)); };"
LINES = "document.getElementById('message_body').innerText.split('\\n').filter((l) => l !== '')"
"""The page's lines (each frame follows a ``<br>``)."""


@dataclass(frozen=True)
class SeedChat:
    """mservices serving the chat, and the seed page's origin allowed to open its socket."""

    base_url: str
    origin: str
    services: Services
    passwords: dict[str, str]


@pytest.fixture
async def seed_chat(
    tmp_path: Path, sqlite_url: str, seed_site: SeedSite
) -> AsyncIterator[SeedChat]:
    """mservices on a port chosen first, so the seed site (which needs that port) can start
    before the settings that allow its origin; users alice, bob and carol may chat."""
    sock, port = bind_unused_port()
    base_url = f"http://127.0.0.1:{port}"
    origin = await seed_site(base_url)
    settings = make_settings(tmp_path, sqlite_url, ws_origins=[origin])
    services = await open_services(settings)
    server = HTTPServer(make_app(settings, services))
    server.add_sockets([sock])
    passwords = {}
    try:
        async with services.sessions() as session, session.begin():
            for name in ("alice", "bob", "carol"):
                password = secrets.token_urlsafe(12)
                user = await UserRepository(session).add(
                    name=name, password_hash=await services.passwords.hash(password)
                )
                await grant_in_session(session, user.id, CHAT_USE)
                passwords[name] = password
        yield SeedChat(base_url, origin, services, passwords)
    finally:
        server.stop()
        await server.close_all_connections()
        await history_written(services)
        await services.close()


async def history_written(services: Services) -> None:
    """Let the history writer finish before the services close (``ChatHistory.close`` would
    cancel a write in progress, then SQLite waits for its lock)."""
    deadline = asyncio.get_running_loop().time() + 5
    while services.hub.history._pending:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the history writer never finished")
        await asyncio.sleep(0.01)


async def open_seed_page(browser: Browser, chat: SeedChat, name: str, locale: str) -> Page:
    """A browser asking for ``locale``: log in on mservices as ``name``, then open the seed's
    chat page."""
    context = await browser.new_context(locale=locale)
    context.set_default_timeout(TIMEOUT_MS)
    await context.add_init_script(RECORD_ALERTS)
    page = await context.new_page()
    await page.goto(f"{chat.base_url}/login?next=/")
    user_name, password, log_in = LOGIN_FORM[locale]
    await page.get_by_label(user_name).fill(name)
    await page.get_by_label(password).fill(chat.passwords[name])
    await page.get_by_role("button", name=log_in, exact=True).click()
    await page.wait_for_url(f"{chat.base_url}/")
    await page.goto(f"{chat.origin}/robbit.html")
    return page


async def lines_become(page: Page, expected: list[str]) -> None:
    """Wait (bounded) until the page shows exactly ``expected``, one line per frame."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_MS / 1000
    while (shown := await page.evaluate(LINES)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the page shows {shown}, not {expected}")
        await asyncio.sleep(0.02)


async def send(page: Page, text: str) -> None:
    """Type ``text`` into the seed page's field and click its 发送 button."""
    await page.locator("#msg").fill(text)
    await page.get_by_role("button", name="发送").click()


async def test_the_seeds_chat_page_shows_the_seeds_lines(
    browser: Browser, seed_chat: SeedChat
) -> None:
    alice = await open_seed_page(browser, seed_chat, "alice", "zh-CN")
    await lines_become(alice, ["alice 进入聊天室"])
    bob = await open_seed_page(browser, seed_chat, "bob", "en-US")
    await lines_become(bob, ["bob joined the chat room"])
    await lines_become(alice, ["alice 进入聊天室", "bob 进入聊天室"])

    await send(alice, "hello")
    await lines_become(alice, ["alice 进入聊天室", "bob 进入聊天室", "alice 说: hello"])
    await lines_become(bob, ["bob joined the chat room", "alice says: hello"])
    await WatchedPage(alice).keep_screenshot("seed-chat-page")

    await send(alice, HOSTILE)
    said = f"alice 说: {HOSTILE}"
    await lines_become(alice, ["alice 进入聊天室", "bob 进入聊天室", "alice 说: hello", said])
    await lines_become(
        bob, ["bob joined the chat room", "alice says: hello", f"alice says: {HOSTILE}"]
    )
    for page in (alice, bob):
        assert await page.locator("#message_body img").count() == 0
        assert await page.evaluate("window.__alerts") == []

    await bob.context.close()
    await lines_become(
        alice, ["alice 进入聊天室", "bob 进入聊天室", "alice 说: hello", said, "bob 离开聊天室"]
    )

    carol = await open_seed_page(browser, seed_chat, "carol", "zh-CN")
    await lines_become(carol, ["alice 说: hello", said, "carol 进入聊天室"])
    await WatchedPage(carol).keep_screenshot("seed-chat-page-history")
    await alice.context.close()
    await carol.context.close()

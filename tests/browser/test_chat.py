"""The chat page in a real browser: two users in separate Chromium contexts chat through
``/chat`` (the app served in-process), see each other online, hostile text stays text, and a
page whose socket the server closes reconnects and shows what it missed.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (see ``conftest.py``); skipped
without them unless ``MSERVICES_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from repositories.users import UserRepository
from server.permissions import CHAT_USE
from server.realtime.websocket import open_sockets
from server.services import Services
from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES, Client
from tests.grants import grant_in_session

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, Page, expect  # noqa: E402 - needs the check

HOSTILE = "<img src=x onerror=alert(1)>"
RECORD_ALERTS = "window.__alerts = []; window.alert = (m) => { window.__alerts.push(String(m)); };"


@pytest.fixture
async def passwords(services: Services) -> dict[str, str]:
    """Two users, alice and bob, who may chat; their passwords."""
    created = {}
    async with services.sessions() as session, session.begin():
        for name in ("alice", "bob"):
            password = secrets.token_urlsafe(12)
            user = await UserRepository(session).add(
                name=name, password_hash=await services.passwords.hash(password)
            )
            await grant_in_session(session, user.id, CHAT_USE)
            created[name] = password
    return created


@pytest.fixture(autouse=True)
async def history_written_afterwards(services: Services) -> AsyncIterator[None]:
    """After the test, let the history writer finish before the services close (a stopgap:
    ``ChatHistory.close`` cancels a write in progress, then SQLite waits 30 s for the lock)."""
    yield
    deadline = asyncio.get_running_loop().time() + 5
    while services.hub.history._pending:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the history writer never finished")
        await asyncio.sleep(0.01)


async def open_chat(browser: Browser, client: Client, name: str, password: str) -> Page:
    """A fresh browser context (its own cookies), logged in through the form, on ``/chat``."""
    context = await browser.new_context(base_url=client.base_url, locale="zh-CN")
    context.set_default_timeout(10_000)
    await context.add_init_script(RECORD_ALERTS)
    page = await context.new_page()
    await page.goto("/login?next=/chat")
    await page.get_by_label("用户名").fill(name)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_url(client.base_url + "/chat")
    await expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")
    return page


async def send(page: Page, text: str) -> None:
    """Type ``text`` and press Enter."""
    field = page.locator("#chat-input")
    await field.fill(text)
    await field.press("Enter")
    await expect(field).to_have_value("")


async def test_two_users_chat_see_each_other_online_and_hostile_text_stays_text(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    alice = await open_chat(browser, client, "alice", passwords["alice"])
    bob = await open_chat(browser, client, "bob", passwords["bob"])

    for page in (alice, bob):
        await expect(page.locator("#chat-online li")).to_have_text(["alice", "bob"])
    await expect(alice.locator("#chat-messages")).to_contain_text("bob 进入聊天室")

    await send(alice, "你好, bob")
    await expect(bob.locator("#chat-messages .chat-text")).to_have_text(["你好, bob"])
    await expect(bob.locator(".chat-message .chat-user")).to_have_text(["alice"])
    await send(bob, HOSTILE)

    for page in (alice, bob):
        await expect(page.locator("#chat-messages .chat-text")).to_have_text(["你好, bob", HOSTILE])
        assert await page.locator("#chat-messages img").count() == 0
        assert await page.evaluate("window.__alerts") == []
    await expect(alice.locator(".chat-message.mine .chat-text")).to_have_text(["你好, bob"])

    await bob.context.close()
    await expect(alice.locator("#chat-online li")).to_have_text(["alice"])
    await expect(alice.locator("#chat-messages")).to_contain_text("bob 离开聊天室")


async def test_a_page_reconnects_after_the_server_closes_and_shows_what_it_missed(
    browser: Browser, client: Client, services: Services, passwords: dict[str, str]
) -> None:
    alice = await open_chat(browser, client, "alice", passwords["alice"])
    sockets: list[str] = []
    alice.on("websocket", lambda socket: sockets.append(socket.url))
    await send(alice, "before")
    await expect(alice.locator("#chat-messages .chat-text")).to_have_text(["before"])
    before_id = await alice.locator(".chat-message").last.get_attribute("data-id")

    # The page waits at least 250 ms before reconnecting; the message lands in that gap.
    await open_sockets(services).close_all(1012, "restarting")
    await services.hub.say("bob", "lobby", "while away")

    await expect(alice.locator("#chat-messages .chat-text")).to_have_text(["before", "while away"])
    await expect(alice.locator("#chat-status")).to_have_attribute("data-state", "open")
    await expect(alice.locator("#chat-messages")).to_contain_text("已重新连接")
    assert len(sockets) == 1
    query = parse_qs(urlsplit(sockets[0]).query)
    assert query == {"room": ["lobby"], "last_id": [before_id]}, "resumed from the exact id"
    assert before_id is not None and int(before_id) > 2**53, "ids exceed a double's precision"

"""The chat page in a real browser: two users in separate Chromium contexts chat through
``/chat`` (the app served in-process), see each other online, hostile text stays text, and a
page whose socket the server closes reconnects and shows what it missed, and a page whose session
ended (logged out elsewhere, or refused at the handshake) stops with a link to log in again; the
page, its script's lines and the server's error frames speak Chinese by default and English to a
browser that asks for it.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (see ``conftest.py``); skipped
without them unless ``MSERVICES_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import re
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
LOGIN_FORM = {
    "zh-CN": ("用户名", "密码", "登录"),
    "en-US": ("User name", "Password", "Log in"),
}
"""The login form's labels and button in each language the tests open it in."""
CHINESE = re.compile(r"[\u3400-\u9fff\u3000-\u303f\uff00-\uffef]")
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


async def open_chat(
    browser: Browser, client: Client, name: str, password: str, locale: str = "zh-CN"
) -> Page:
    """A fresh browser context (its own cookies) asking for ``locale``, logged in through the
    form, on ``/chat``."""
    context = await browser.new_context(base_url=client.base_url, locale=locale)
    context.set_default_timeout(10_000)
    await context.add_init_script(RECORD_ALERTS)
    page = await context.new_page()
    await page.goto("/login?next=/chat")
    user_name, password_label, log_in = LOGIN_FORM[locale]
    await page.get_by_label(user_name).fill(name)
    await page.get_by_label(password_label).fill(password)
    await page.get_by_role("button", name=log_in, exact=True).click()
    await page.wait_for_url(client.base_url + "/chat")
    await expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")
    return page


async def send(page: Page, text: str) -> None:
    """Type ``text`` and press Enter."""
    field = page.locator("#chat-input")
    await field.fill(text)
    await field.press("Enter")
    await expect(field).to_have_value("")


async def send_a_lone_surrogate(page: Page) -> None:
    """Send text the server refuses with an error frame (``bad_text``): the browser's
    JSON.stringify escapes a lone surrogate, which no UTF-8 text can hold."""
    await page.evaluate("document.getElementById('chat-input').value = 'a\\uD800b'")
    await page.locator("#chat-input").press("Enter")


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


async def test_the_page_and_the_servers_error_frames_speak_chinese_by_default(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    alice = await open_chat(browser, client, "alice", passwords["alice"])

    await expect(alice.locator("#chat-status")).to_have_text("已连接")
    await expect(alice.locator("#chat-input")).to_have_attribute(
        "placeholder", "输入消息，回车发送"
    )
    await send_a_lone_surrogate(alice)
    await expect(alice.locator(".chat-notice-error")).to_have_text(
        ["文本不是合法的 Unicode（含孤立的代理项）"]
    )


async def test_the_page_and_the_servers_error_frames_speak_english_when_the_browser_asks(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    alice = await open_chat(browser, client, "alice", passwords["alice"], locale="en-US")
    bob = await open_chat(browser, client, "bob", passwords["bob"], locale="en-US")

    assert await alice.evaluate("document.documentElement.lang") == "en-US"
    await expect(alice.locator("#chat-status")).to_have_text("Connected")
    await expect(alice.locator("#chat-messages")).to_contain_text("bob joined the chat room")
    await expect(alice.locator("#chat-input")).to_have_attribute(
        "placeholder", "Type a message and press Enter to send"
    )
    await expect(alice.get_by_role("button", name="Send")).to_be_visible()
    await expect(alice.locator(".chat-online h2")).to_have_text("Online 2")
    await send_a_lone_surrogate(alice)
    await expect(alice.locator(".chat-notice-error")).to_have_text(
        ["the text is not valid Unicode (a lone surrogate)"]
    )
    await send(alice, "你好, bob")  # a message is data: it stays as it was typed
    await expect(bob.locator("#chat-messages .chat-text")).to_have_text(["你好, bob"])
    await bob.context.close()
    await expect(alice.locator("#chat-messages")).to_contain_text("bob left the chat room")

    own_text = await alice.evaluate(
        """() => {
          const chat = document.getElementById("chat").cloneNode(true);
          chat.querySelectorAll(".chat-text").forEach((node) => node.remove());
          return chat.innerText + " " + document.title;
        }"""
    )
    assert not CHINESE.search(own_text), own_text


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


async def test_logging_out_in_another_tab_stops_the_chat_with_a_login_link_and_bob_sees_the_leave(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    alice = await open_chat(browser, client, "alice", passwords["alice"])
    bob = await open_chat(browser, client, "bob", passwords["bob"])
    await expect(alice.locator("#chat-online li")).to_have_text(["alice", "bob"])
    attempts: list[str] = []
    alice.on("websocket", lambda socket: attempts.append(socket.url))
    probes: list[str] = []
    alice.on("request", lambda request: probes.append(request.url))

    other_tab = await alice.context.new_page()
    await other_tab.goto("/")
    await other_tab.get_by_role("button", name="退出").click()

    await expect(bob.locator("#chat-online li")).to_have_text(["bob"])
    await expect(bob.locator("#chat-messages")).to_contain_text("alice 离开聊天室")
    status = alice.locator("#chat-status")
    await expect(status).to_have_attribute("data-state", "stopped")
    await expect(status).to_contain_text("会话已结束，请重新登录")
    link = status.get_by_role("link", name="重新登录")
    await expect(link).to_have_attribute("href", "/login?next=%2Fchat")
    await expect(alice.locator("#chat-input")).to_be_disabled()
    # Going back online would reconnect a page that still hoped to; this one has stopped.
    await alice.context.set_offline(True)
    await alice.context.set_offline(False)
    await send_marker_through(bob)
    assert attempts == [], "no connection attempt after the session ended"
    assert probes == [], "4001 says why by itself: no request was needed"
    await link.click()
    await alice.wait_for_url(client.base_url + "/login?next=%2Fchat")


async def test_a_refused_handshake_with_no_session_left_stops_after_one_check(
    browser: Browser, client: Client, services: Services, passwords: dict[str, str]
) -> None:
    alice = await open_chat(browser, client, "alice", passwords["alice"])
    attempts: list[str] = []
    alice.on("websocket", lambda socket: attempts.append(socket.url))
    probes: list[str] = []
    alice.on("request", lambda request: probes.append(request.url))

    # The session is gone without the socket being told (its cookie cleared, as after an
    # expiry), then the server restarts: the reconnect is refused with 401 before it opens.
    await alice.context.clear_cookies()
    await open_sockets(services).close_all(1012, "restarting")

    status = alice.locator("#chat-status")
    await expect(status).to_have_attribute("data-state", "stopped")
    await expect(status).to_contain_text("会话已结束，请重新登录")
    await expect(status.get_by_role("link", name="重新登录")).to_be_visible()
    await alice.context.set_offline(True)
    await alice.context.set_offline(False)
    await alice.evaluate("() => fetch('/user/me')")  # a request after any the page would make
    assert len(attempts) == 1, "one refused attempt, then no more"
    assert [url for url in probes if url.endswith("/user/me")] == [client.base_url + "/user/me"] * 2


async def send_marker_through(page: Page) -> None:
    """Chat a message and see it come back: time has passed for anything the other page would
    have done meanwhile (no sleep)."""
    marker = f"marker {secrets.token_hex(4)}"
    await send(page, marker)
    await expect(page.locator("#chat-messages .chat-text").last).to_have_text(marker)

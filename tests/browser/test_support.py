"""Private support conversations (客服在线) in a real browser: a customer, two agents and a second
customer, each in their own Chromium context, on the app served in-process.

carol opens 客服在线 and sees that no agent is online; agent ann opens it and lands on the queue,
and carol sees an agent come online; carol writes, and the conversation appears live in the
queues of ann and of bob (who opened his later); ann opens it and answers, and carol sees the
answer with the staff badge while bob's queue turns to "answered"; bob closes it, and carol's page
says so and stops taking input. dave, the second customer, gets a conversation of his own, never
sees carol's, is answered 404 for her conversation's page, and his browser's WebSocket into her
room is refused.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator

import pytest

from repositories.users import UserRepository
from server.permissions import CHAT_USE, SUPPORT_ANSWER
from server.services import Services
from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES, Client
from tests.grants import grant_in_session

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, Locator, Page, expect  # noqa: E402 - needs the check

PEOPLE = {
    "carol": (CHAT_USE,),
    "dave": (CHAT_USE,),
    "ann": (CHAT_USE, SUPPORT_ANSWER),
    "bob": (CHAT_USE, SUPPORT_ANSWER),
}
RECORD_ALERTS = "window.__alerts = []; window.alert = (m) => { window.__alerts.push(String(m)); };"


@pytest.fixture
async def passwords(services: Services) -> dict[str, str]:
    """Customers carol and dave, agents ann and bob; their passwords."""
    created = {}
    async with services.sessions() as session, session.begin():
        for name, permissions in PEOPLE.items():
            password = secrets.token_urlsafe(12)
            user = await UserRepository(session).add(
                name=name, password_hash=await services.passwords.hash(password)
            )
            await grant_in_session(session, user.id, *permissions)
            created[name] = password
    return created


@pytest.fixture(autouse=True)
async def settled_afterwards(services: Services) -> AsyncIterator[None]:
    """After the test, let background work finish before the services close."""
    yield
    deadline = asyncio.get_running_loop().time() + 5
    while services.hub.history._pending or len(services.background):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("background work never finished")
        await asyncio.sleep(0.01)


async def log_in(browser: Browser, client: Client, name: str, password: str, path: str) -> Page:
    """A fresh Chromium context (its own cookies, Chinese) logged in through the form, at
    ``path``."""
    context = await browser.new_context(base_url=client.base_url, locale="zh-CN")
    context.set_default_timeout(10_000)
    await context.add_init_script(RECORD_ALERTS)
    page = await context.new_page()
    await page.goto(f"/login?next={path}")
    await page.get_by_label("用户名").fill(name)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录", exact=True).click()
    await page.wait_for_load_state()
    return page


async def send(page: Page, text: str) -> None:
    """Type ``text`` and press Enter."""
    field = page.locator("#chat-input")
    await field.fill(text)
    await field.press("Enter")
    await expect(field).to_have_value("")


def thread_row(page: Page, thread_id: str) -> Locator:
    """The queue's row of a conversation."""
    return page.locator(f'#support-threads tr[data-thread-id="{thread_id}"]')


async def test_a_customer_two_agents_and_a_second_customer(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    carol = await log_in(browser, client, "carol", passwords["carol"], "/robbit")
    await expect(carol.locator("#chat-status")).to_have_attribute("data-state", "open")
    room = await carol.locator("#chat").get_attribute("data-room")
    assert room is not None and re.fullmatch(r"support-[0-9]+", room)
    thread_id = room.removeprefix("support-")
    await expect(carol.locator("#support-agents")).to_have_attribute("data-online", "false")
    await expect(carol.locator("#support-state")).to_have_text("新对话：客服尚未回复")

    # An agent opening 客服在线 lands on the queue; carol sees an agent online.
    ann = await log_in(browser, client, "ann", passwords["ann"], "/robbit")
    await ann.wait_for_url(client.base_url + "/support")
    await expect(ann.locator("#chat-status")).to_have_attribute("data-state", "open")
    await expect(carol.locator("#support-agents")).to_have_attribute("data-online", "true")
    await expect(carol.locator("#support-agents")).to_have_text("客服在线")

    # carol writes: the conversation appears live in ann's queue, and in bob's, opened later.
    await send(carol, "我的包裹还没到 <b>")
    await expect(thread_row(ann, thread_id)).to_contain_text("carol")
    await expect(thread_row(ann, thread_id)).to_contain_text("新对话")
    bob_queue = await log_in(browser, client, "bob", passwords["bob"], "/support")
    await expect(bob_queue.locator("#chat-status")).to_have_attribute("data-state", "open")
    await expect(thread_row(bob_queue, thread_id)).to_contain_text("我的包裹还没到 <b>")
    await expect(bob_queue.locator("#support-agents-online")).to_have_text("ann, bob")

    # ann opens it and answers: carol sees the staff badge, bob's queue says answered.
    await ann.locator(f'a[href="/support/{thread_id}"]').click()
    await ann.wait_for_url(f"{client.base_url}/support/{thread_id}")
    await expect(ann.locator("#chat-messages .chat-text")).to_have_text(["我的包裹还没到 <b>"])
    await send(ann, "今天发货")
    answer = carol.locator(".chat-message.staff")
    await expect(answer.locator(".chat-text")).to_have_text(["今天发货"])
    await expect(answer.locator(".chat-badge")).to_have_text(["客服"])
    await expect(answer.locator(".chat-user")).to_have_text(["ann"])
    await expect(carol.locator(".chat-message:not(.staff) .chat-badge")).to_have_count(0)
    await expect(thread_row(bob_queue, thread_id)).to_contain_text("已回复")
    await expect(carol.locator("#support-state")).to_have_text("已回复")

    # bob closes it from the conversation's page: everyone's page says so.
    bob = await bob_queue.context.new_page()
    await bob.goto(f"/support/{thread_id}")
    await bob.get_by_role("button", name="结束对话").click()
    await expect(bob.locator(".flash-success")).to_have_text("对话已结束")
    await expect(thread_row(bob_queue, thread_id)).to_have_count(0)
    for page in (carol, ann):
        await expect(page.locator("#support-closed")).to_be_visible()
        await expect(page.locator("#chat-input")).to_be_disabled()
    await expect(carol.locator("#support-state")).to_have_text("已结束")

    # dave: his own conversation, never carol's.
    dave = await log_in(browser, client, "dave", passwords["dave"], "/robbit")
    await expect(dave.locator("#chat-status")).to_have_attribute("data-state", "open")
    assert await dave.locator("#chat").get_attribute("data-room") != room
    await expect(dave.locator("#chat-messages .chat-message")).to_have_count(0)
    refused = await dave.evaluate(
        """(room) => new Promise((resolve) => {
          const url = "ws://" + location.host + "/message?room=" + room;
          const ws = new WebSocket(url, ["mservices.chat.v1"]);
          let opened = false;
          ws.onopen = () => { opened = true; ws.close(); };
          ws.onclose = (event) => resolve({ opened: opened, code: event.code });
        })""",
        room,
    )
    assert refused == {"opened": False, "code": 1006}, refused
    response = await dave.goto(f"/support/{thread_id}")
    assert response is not None and response.status == 404
    assert "我的包裹" not in await dave.content()

    for page in (carol, ann, bob, dave):
        assert await page.evaluate("window.__alerts") == []
        assert await page.locator("#chat-messages b").count() == 0

"""``/docs`` in Chromium: "try it out" sends ``GET /user/me`` with the token typed at the top.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (see ``tests/browser/conftest.py``).
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES, Client

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, expect  # noqa: E402 - needs the check

PASSWORD = "correct horse battery"


async def test_try_it_out_sends_get_user_me_with_the_typed_token(
    browser: Browser, client: Client
) -> None:
    assert (await client.post("/user", json_body={"name": "reader", "pwd": PASSWORD})).status == 201
    login = await client.post("/user/login", json_body={"name": "reader", "pwd": PASSWORD})
    token = login.json()["token"]
    context = await browser.new_context(base_url=client.base_url, locale="zh-CN")
    page = await context.new_page()
    await page.goto("/docs")
    operation = page.locator("details.api-op", has=page.locator("code", has_text="/user/me"))
    operation = operation.filter(has=page.locator('form[data-path="/user/me"][data-method="GET"]'))
    await operation.locator("summary").click()
    form = operation.locator("form.try-it")
    # Without a token the API refuses: the page shows the status, not a login redirect.
    await form.get_by_role("button", name="发送请求").click()
    await expect(form.locator(".try-status")).to_contain_text("401")
    await expect(form.locator(".try-result")).to_contain_text('"msg": "请先登录')
    await page.locator("#docs-token").fill(token)
    await form.get_by_role("button", name="发送请求").click()
    await expect(form.locator(".try-status")).to_contain_text("200")
    await expect(form.locator(".try-result")).to_contain_text('"name": "reader"')
    await context.close()


async def test_an_english_browser_reads_the_page_and_the_answers_in_english(
    browser: Browser, client: Client
) -> None:
    context = await browser.new_context(base_url=client.base_url, locale="en-US")
    page = await context.new_page()
    await page.goto("/docs")
    await expect(page.locator(".docs-language-note")).to_have_text(
        "API descriptions are in English."
    )
    await expect(page.locator("#docs-token")).to_have_attribute(
        "placeholder", "Paste a token, or run POST /user/login below to fill it in"
    )
    operation = page.locator("details.api-op", has=page.locator('form[data-path="/user/me"]'))
    operation = operation.filter(has=page.locator('form[data-method="GET"]'))
    await operation.locator("summary").click()
    form = operation.locator("form.try-it")
    await expect(form.locator("h4")).to_have_text("Try it out")
    await form.get_by_role("button", name="Send request").click()
    await expect(form.locator(".try-status")).to_contain_text("401")
    # The API answers the page's reader in the browser's language too.
    await expect(form.locator(".try-result")).to_contain_text('"msg": "log in first')
    await context.close()

"""The downloads page in a real browser, against a local upstream: sizes in KB/MB with percent and
speed while running; failed and cancelled rows look finished (no indeterminate, animated bar) and
say why in words.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (see ``conftest.py``); skipped
without them unless ``MSERVICES_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from repositories.users import UserRepository
from server.services import Services
from server.settings import Settings
from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES, Client, make_settings
from tests.grants import grant_in_session
from tests.server.downloads.conftest import Upstream, serve_upstream

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, Page, expect  # noqa: E402 - needs the check

MAX_BYTES = 200_000


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """The local upstream is allowed; a 200 000-byte cap; several downloads at once."""
    return make_settings(
        tmp_path,
        sqlite_url,
        download_allow="127.0.0.1",
        download_max_bytes=MAX_BYTES,
        download_timeout_seconds=5.0,
        download_concurrency=4,
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A live local upstream (``tests/server/downloads/conftest.py``)."""
    async with serve_upstream() as state:
        yield state


async def open_downloads(browser: Browser, client: Client, services: Services) -> Page:
    """A user granted ``downloads.use``, logged in through the form, on ``/downloads``."""
    password = secrets.token_urlsafe(12)
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).add(
            name="cxk", password_hash=await services.passwords.hash(password)
        )
        await grant_in_session(session, user.id, "downloads.use")
    context = await browser.new_context(base_url=client.base_url, locale="zh-CN")
    context.set_default_timeout(10_000)
    page = await context.new_page()
    await page.goto("/login?next=/downloads")
    await page.get_by_label("用户名").fill("cxk")
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_url(client.base_url + "/downloads")
    return page


async def start(page: Page, url: str, filename: str) -> None:
    """Fill the form and submit it."""
    await page.get_by_label("网址").fill(url)
    await page.get_by_label("文件名（可不填）").fill(filename)
    await page.get_by_role("button", name="下载", exact=True).click()
    await expect(page.locator("#download-rows tr", has_text=filename)).to_have_count(1)


async def test_a_running_download_shows_sizes_percent_and_speed_and_stopped_ones_say_why(
    browser: Browser, client: Client, services: Services, upstream: Upstream
) -> None:
    page = await open_downloads(browser, client, services)

    await start(page, upstream.url("/gated/run/100000?length=1"), "running.bin")
    running = page.locator("#download-rows tr", has_text="running.bin")
    await expect(running).to_have_attribute("data-state", "running")
    # 16 KB of 100 000 bytes arrived; the second poll measures a speed.
    await expect(running.locator(".download-amount")).to_have_text(
        re.compile(r"^ 16\.0 KB / 97\.7 KB · 16\.4% · [0-9.]+ (B|KB|MB)/s")
    )
    await expect(running.locator(".download-state")).to_have_text("下载中")
    await expect(page.locator("#download-rows")).not_to_contain_text("bytes")

    await start(page, upstream.url("/status/500"), "broken.bin")
    await start(page, upstream.url(f"/bytes/{MAX_BYTES + 1}"), "huge.bin")
    await running.get_by_role("button", name="取消").click()

    broken = page.locator("#download-rows tr", has_text="broken.bin")
    await expect(broken).to_have_attribute("data-state", "failed")
    await expect(broken.locator(".download-state")).to_have_text(
        "失败：对方服务器返回错误或无法连接（HTTP 500）"
    )
    huge = page.locator("#download-rows tr", has_text="huge.bin")
    await expect(huge.locator(".download-state")).to_have_text("失败：文件超过大小上限，已停止")
    await expect(running).to_have_attribute("data-state", "cancelled")
    await expect(running.locator(".download-state")).to_have_text("已取消：文件未保存")
    await expect(running.get_by_role("button", name="移除")).to_be_visible()
    for row in (broken, huge, running):
        # A progress element without a value is indeterminate, and Chromium animates it.
        assert await row.locator("progress:indeterminate").count() == 0
        assert await row.locator("progress").count() == 1
    await expect(running.locator(".download-amount")).to_have_text(" 16.0 KB / 97.7 KB · 16.4%")

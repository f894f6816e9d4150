"""The downloads page in a real browser, against a local upstream: sizes in KB/MB with percent and
speed while running; failed and cancelled rows look finished (no indeterminate, animated bar) and
say why in words, in Chinese by default and in English for an English browser.

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


async def open_downloads(
    browser: Browser, client: Client, services: Services, locale: str = "zh-CN"
) -> Page:
    """A user granted ``downloads.use``, logged in through the form, on ``/downloads`` (the
    browser asks for ``locale``)."""
    password = secrets.token_urlsafe(12)
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).add(
            name="cxk", password_hash=await services.passwords.hash(password)
        )
        await grant_in_session(session, user.id, "downloads.use")
    context = await browser.new_context(base_url=client.base_url, locale=locale)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    await page.goto("/login?next=/downloads")
    await page.locator('input[name="name"]').fill("cxk")
    await page.locator('input[name="pwd"]').fill(password)
    await page.locator('form[action="/login"] button[type="submit"]').click()
    await page.wait_for_url(client.base_url + "/downloads")
    return page


async def start(
    page: Page,
    url: str,
    filename: str,
    labels: tuple[str, str, str] = ("网址", "文件名（可不填）", "下载"),
) -> None:
    """Fill the form (its URL and file name fields and its button labelled ``labels``) and
    submit it."""
    address, name, button = labels
    await page.get_by_label(address).fill(url)
    await page.get_by_label(name).fill(filename)
    await page.get_by_role("button", name=button, exact=True).click()
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


async def test_an_english_browser_reads_the_page_progress_and_reasons_in_english(
    browser: Browser, client: Client, services: Services, upstream: Upstream
) -> None:
    page = await open_downloads(browser, client, services, locale="en-US")
    labels = ("URL", "File name (optional)", "Download")
    await expect(page.locator("h1")).to_have_text("Downloads")
    await expect(page.locator("#download-empty")).to_have_text("No downloads yet.")

    await start(page, upstream.url("/gated/en/100000?length=1"), "running.bin", labels)
    running = page.locator("#download-rows tr", has_text="running.bin")
    await expect(running.locator(".download-state")).to_have_text("Downloading")
    await expect(running.locator(".download-amount")).to_have_text(
        re.compile(r"^ 16\.0 KB / 97\.7 KB · 16\.4%")
    )
    await start(page, upstream.url("/status/500"), "broken.bin", labels)
    await page.get_by_label("URL").fill("ftp://127.0.0.1/file")
    await page.get_by_role("button", name="Download", exact=True).click()
    await expect(page.locator("#download-error")).to_have_text(
        "Only http:// and https:// URLs can be downloaded"
    )
    await running.get_by_role("button", name="Cancel").click()

    broken = page.locator("#download-rows tr", has_text="broken.bin")
    await expect(broken.locator(".download-state")).to_have_text(
        "Failed: The other server answered an error or could not be reached (HTTP 500)"
    )
    await expect(running.locator(".download-state")).to_have_text(
        "Cancelled: The file was not saved"
    )
    await expect(running.get_by_role("button", name="Remove")).to_be_visible()
    content = await page.locator("main").inner_text()
    assert re.findall(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]", content) == []

"""Self-service pages in a real browser (headless Debian Chromium driven by Playwright): sign up,
the account page (email verification, password change, ending a session), and a forgotten
password recovered through a link mailed to a real SMTP server (aiosmtpd, started here).

Skipped without ``/usr/bin/chromium`` or the ``playwright`` package (a failure when
``MSERVICES_TEST_REQUIRE_SERVICES=1``), like the other browser tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES
from tests.mailbox import Mailbox, Site, link_in, serve_with_mail

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, Page, expect  # noqa: E402 - needs the check

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
async def site(tmp_path: Path, sqlite_url: str, mailbox: Mailbox) -> AsyncIterator[Site]:
    async with serve_with_mail(tmp_path, sqlite_url, mailbox) as served:
        yield served


async def new_page(browser: Browser, site: Site, *, locale: str = "zh-CN") -> Page:
    """A page in a fresh context (its own cookies) whose browser asks for ``locale``."""
    context = await browser.new_context(base_url=site.base_url, locale=locale)
    context.set_default_timeout(10_000)
    return await context.new_page()


async def sign_up(page: Page, name: str) -> None:
    """From the login page's link, through the sign-up form, onto the account page."""
    await page.goto("/login")
    await page.get_by_role("link", name="注册").click()
    await page.get_by_label("用户名").fill(name)
    await page.get_by_label("密码", exact=True).fill(PASSWORD)
    await page.get_by_label("确认密码").fill(PASSWORD)
    await page.get_by_role("button", name="注册").click()
    await page.wait_for_url("**/account")
    await expect(page.locator(".flash")).to_have_text(f"注册成功，欢迎, {name}")


async def log_in(page: Page, name: str, password: str) -> None:
    """Through the login form."""
    await page.goto("/login")
    await page.get_by_label("用户名").fill(name)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    await expect(page.locator(".flash")).to_have_text(f"欢迎, {name}")


async def test_signup_then_account_change_password_and_end_a_session(
    browser: Browser, site: Site
) -> None:
    page = await new_page(browser, site)
    await sign_up(page, "newbie")
    other = await new_page(browser, site)
    await log_in(other, "newbie", PASSWORD)

    await page.goto("/")
    await page.locator(".account a.who").click()  # the user name in the header
    await page.wait_for_url("**/account")
    await expect(page.locator("table.sessions tbody tr")).to_have_count(2)
    form = page.locator("form.account-password")
    await form.get_by_label("当前密码").fill(PASSWORD)
    await form.get_by_label("新密码", exact=True).fill(NEW_PASSWORD)
    await form.get_by_label("确认新密码").fill(NEW_PASSWORD)
    await form.get_by_role("button", name="修改密码").click()

    await expect(page.locator(".flash")).to_have_text("密码已修改，其他 1 个会话已结束")
    await expect(page.locator("table.sessions tbody tr")).to_have_count(1)
    await other.goto("/account")
    await other.wait_for_url("**/login?next=%2Faccount")

    await log_in(other, "newbie", NEW_PASSWORD)
    await page.reload()
    rows = page.locator("table.sessions tbody tr")
    await expect(rows).to_have_count(2)
    await rows.filter(has_not_text="当前").get_by_role("button", name="结束此会话").click()
    await expect(page.locator(".flash")).to_have_text("会话已结束")
    await expect(rows).to_have_count(1)
    await other.goto("/account")
    await other.wait_for_url("**/login?next=%2Faccount")


async def test_forgot_password_mail_reset_and_log_in_with_the_new_password(
    browser: Browser, site: Site
) -> None:
    page = await new_page(browser, site)
    await sign_up(page, "forgetful")
    email_form = page.locator("form.account-email")
    await email_form.get_by_label("新邮箱").fill("Forgetful@Example.com")
    await email_form.get_by_label("当前密码").fill(PASSWORD)
    await page.get_by_role("button", name="保存邮箱").click()
    await expect(page.locator(".flash")).to_have_text(
        "邮箱已保存，验证链接已发送到 forgetful@example.com"
    )
    await expect(page.locator(".email-state")).to_contain_text("未验证")
    await page.goto(link_in(await site.mailbox.wait_for(1)))
    await page.get_by_role("button", name="确认这是我的邮箱").click()
    await expect(page.locator(".flash")).to_have_text("邮箱 forgetful@example.com 已验证。")

    visitor = await new_page(browser, site)
    await visitor.goto("/login")
    await visitor.get_by_role("link", name="忘记密码？").click()
    await visitor.get_by_label("邮箱").fill("forgetful@example.com")
    await visitor.get_by_role("button", name="发送重置链接").click()
    await expect(visitor.locator(".flash")).to_contain_text("重置密码的链接已发送")
    await visitor.goto(link_in(await site.mailbox.wait_for(2)))
    await visitor.get_by_label("新密码", exact=True).fill(NEW_PASSWORD)
    await visitor.get_by_label("确认新密码").fill(NEW_PASSWORD)
    await visitor.get_by_role("button", name="重置密码").click()
    await visitor.wait_for_url("**/login")
    await expect(visitor.locator(".flash")).to_have_text(
        "密码已重置，所有会话已结束，请用新密码登录"
    )

    await log_in(visitor, "forgetful", NEW_PASSWORD)
    await page.goto("/account")  # the session from before the reset has ended
    await page.wait_for_url("**/login?next=%2Faccount")


async def test_the_language_chosen_on_the_account_page_follows_the_user_to_another_browser(
    browser: Browser, site: Site
) -> None:
    page = await new_page(browser, site)
    await sign_up(page, "polyglot")
    section = page.locator("form.account-language")
    await expect(section.get_by_label("页面语言")).to_have_value("auto")

    await section.get_by_label("页面语言").select_option("en_US")
    await section.get_by_role("button", name="保存语言").click()

    await page.wait_for_url("**/account")
    await expect(page.locator("html")).to_have_attribute("lang", "en-US")
    await expect(page.get_by_role("heading", name="My account")).to_be_visible()
    language = page.locator("form.account-language").get_by_label("Language of the pages")
    await expect(language).to_have_value("en_US")
    # Another browser, asking for Chinese, speaks English once this account logs in there.
    elsewhere = await new_page(browser, site, locale="zh-CN")
    await elsewhere.goto("/login")
    await expect(elsewhere.locator("html")).to_have_attribute("lang", "zh-CN")
    await elsewhere.get_by_label("用户名").fill("polyglot")
    await elsewhere.get_by_label("密码").fill(PASSWORD)
    await elsewhere.get_by_role("button", name="登录").click()
    await expect(elsewhere.locator(".flash")).to_have_text("Welcome, polyglot")
    await expect(elsewhere.locator("html")).to_have_attribute("lang", "en-US")

    await language.select_option("auto")
    await page.locator("form.account-language").get_by_role("button", name="Save language").click()
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.get_by_role("heading", name="我的账号")).to_be_visible()


async def test_an_english_browser_gets_english_pages_until_it_switches(
    browser: Browser, site: Site
) -> None:
    page = await new_page(browser, site, locale="en-GB")
    await page.goto("/login")
    await expect(page.locator("html")).to_have_attribute("lang", "en-US")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.get_by_role("link", name="Forgot your password?")).to_be_visible()

    await page.locator(".language-switch").get_by_role("button", name="中文").click()

    await page.wait_for_url("**/login")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.get_by_role("link", name="忘记密码？")).to_be_visible()

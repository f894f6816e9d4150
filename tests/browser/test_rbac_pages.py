"""Menus by role in a real browser: headless Debian Chromium driven by Playwright against the app
served in-process on the demo data.

Needs ``/usr/bin/chromium`` (Debian package ``chromium``) and the ``playwright`` package;
Playwright's own browser downloads are never used. Without them the module is skipped, or fails when
``MSERVICES_TEST_REQUIRE_SERVICES=1``. Set ``MSERVICES_TEST_SCREENSHOTS`` to a directory to keep
a screenshot of the menu editor there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.demo import load_demo
from server.services import Services
from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES, Client

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, Dialog, Page, expect  # noqa: E402 - needs the check

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
async def passwords(services: Services) -> dict[str, str]:
    """Load the demo (roles admin/agent/customer and their menus); the users' passwords."""
    async with services.sessions() as session, session.begin():
        result = await load_demo(session, services.passwords)
    return result.new_credentials


async def log_in(browser: Browser, client: Client, name: str, password: str) -> Page:
    """A page in a fresh browser context (its own cookies), logged in through the form.

    It returns once the home page shows ``name`` in the header: that is drawn only for a
    request whose session cookie resolved to the account, whereas the welcome flash travels in a
    cookie of its own and proves only that the form was accepted."""
    context = await browser.new_context(
        base_url=client.base_url, viewport={"width": 1280, "height": 900}, locale="zh-CN"
    )
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_label("用户名").fill(name)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_url(client.base_url + "/")
    await expect(page.locator(".flash")).to_have_text(f"欢迎, {name}")
    await expect(page.locator(".account a.who")).to_have_text(name)
    return page


async def top_menus(page: Page) -> list[str]:
    """The titles in the top navigation bar."""
    return [text.strip() for text in await page.locator("nav.nav li").all_inner_texts()]


async def create_menu(page: Page, title: str, url: str = "") -> None:
    """Create a top-level menu through the editor's form and wait for its flash."""
    await page.goto("/admin/menus")
    form = page.locator("form.menu-create")
    await form.get_by_label("标题").fill(title)
    await form.get_by_label("地址").fill(url)
    await form.get_by_role("button", name="创建").click()
    await expect(page.locator(".flash")).to_have_text(f"已创建菜单「{title}」")


async def test_admin_and_customer_see_different_menus(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    admin = await log_in(browser, client, "admin", passwords["admin"])
    customer = await log_in(browser, client, "customer", passwords["customer"])

    admin_nav = await top_menus(admin)
    customer_nav = await top_menus(customer)
    assert admin_nav != customer_nav
    assert {"首页", "订单查询", "下载", "系统管理"} <= set(admin_nav)
    assert {"首页", "我的订单", "客服中心"} <= set(customer_nav)
    assert "系统管理" not in customer_nav and "下载" not in customer_nav
    await expect(admin.locator("aside.sidebar")).to_contain_text("用户管理")
    await expect(customer.locator("aside.sidebar")).to_contain_text("聊天室")
    await expect(customer.locator("aside.sidebar")).not_to_contain_text("菜单管理")


async def test_a_menu_the_admin_creates_and_grants_appears_for_the_customer_after_reload(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    admin = await log_in(browser, client, "admin", passwords["admin"])
    customer = await log_in(browser, client, "customer", passwords["customer"])
    assert "会员专区" not in await top_menus(customer)

    await create_menu(admin, "会员专区", "/members")
    node = admin.locator("li.menu-node", has=admin.locator('input[value="会员专区"]'))
    await expect(node).to_have_count(1)
    if directory := os.environ.get("MSERVICES_TEST_SCREENSHOTS"):
        await admin.screenshot(path=str(Path(directory) / "admin-menus.png"), full_page=True)

    await admin.goto("/admin/roles")
    card = admin.locator('section.role-card[data-role-name="customer"]')
    await card.get_by_label("会员专区").check()
    await card.get_by_role("button", name="保存菜单").click()
    await expect(admin.locator(".flash")).to_contain_text("角色「customer」现在授予")
    await expect(
        admin.locator('section.role-card[data-role-name="customer"]').get_by_label("会员专区")
    ).to_be_checked()

    await customer.reload()
    link = customer.locator("nav.nav").get_by_role("link", name="会员专区")
    await expect(link).to_have_attribute("href", "/members")


async def test_a_hostile_menu_title_shows_as_text_and_runs_nothing(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    admin = await log_in(browser, client, "admin", passwords["admin"])
    dialogs: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    admin.on("dialog", on_dialog)
    await create_menu(admin, HOSTILE)

    await expect(admin.locator("nav.nav li").filter(has_text=HOSTILE)).to_have_text(HOSTILE)
    await expect(admin.locator("aside.sidebar")).to_contain_text(HOSTILE)
    await expect(
        admin.locator(f'li.menu-node input[name="title"][value="{HOSTILE}"]')
    ).to_have_count(1)
    await admin.goto("/admin/roles")
    await expect(admin.locator("form.checklist").first).to_contain_text(HOSTILE)
    await admin.goto("/")
    await expect(admin.locator("nav.nav")).to_contain_text(HOSTILE)
    assert await admin.locator("header img, aside img, main img").count() == 0
    await admin.wait_for_timeout(300)  # give a broken image's onerror every chance to fire
    assert dialogs == []


async def test_a_customer_opening_an_admin_page_gets_403(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    customer = await log_in(browser, client, "customer", passwords["customer"])
    response = await customer.goto("/admin/menus")
    assert response is not None
    assert (response.status, response.url) == (403, client.base_url + "/admin/menus")
    await expect(customer.locator("h1.error-status")).to_have_text("403")
    await expect(customer.locator(".account a.who")).to_have_text("customer")
    await expect(customer.locator("main")).not_to_contain_text("菜单树")


async def test_a_refused_create_keeps_everything_the_admin_typed(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    admin = await log_in(browser, client, "admin", passwords["admin"])
    await admin.goto("/admin/menus")
    typed = {"标题": "月度报表", "地址": "/downloads", "备注": "每月一号更新"}  # 下载 has this url
    chosen = {
        "上级": "\u2003菜单管理",
        "所需权限": "audit.view · 查看审计日志",
        "给谁看": "仅登录用户",
    }
    form = admin.locator("form.menu-create")
    for label, value in typed.items():
        await form.get_by_label(label).fill(value)
    for label, option in chosen.items():
        await form.get_by_label(label).select_option(label=option)
    await form.get_by_label("显示").uncheck()
    await form.get_by_role("button", name="创建").click()

    await expect(admin.locator(".flash")).to_have_text("地址 /downloads 已属于另一个菜单")
    form = admin.locator("form.menu-create")
    for label, value in typed.items():
        await expect(form.get_by_label(label)).to_have_value(value)
    for label, option in chosen.items():
        await expect(form.get_by_label(label).locator("option:checked")).to_have_text(option)
    await expect(form.get_by_label("显示")).not_to_be_checked()

    # Fix the one refused field and send the rest as it stands.
    await form.get_by_label("地址").fill("/reports")
    await form.get_by_role("button", name="创建").click()
    await expect(admin.locator(".flash")).to_have_text("已创建菜单「月度报表」")


async def test_a_menus_edit_forms_open_and_close_from_the_keyboard(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    admin = await log_in(browser, client, "admin", passwords["admin"])
    await admin.goto("/admin/menus")
    node = admin.locator('li.menu-node:has(> .node-card .node-title:text-is("下载"))')
    await expect(node.locator(".node-row")).to_contain_text("/downloads")
    title = node.locator('> .node-card input[name="title"]')
    await expect(title).to_be_hidden()

    summary = node.locator("> .node-card summary")
    await summary.focus()
    await admin.keyboard.press("Enter")
    await expect(title).to_be_visible()
    await title.focus()
    await admin.keyboard.press("Escape")
    await expect(title).to_be_hidden()
    await expect(summary).to_be_focused()

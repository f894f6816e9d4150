"""The layout on a 390 px phone and a 1280 px desktop, in a real browser (headless Debian Chromium
driven by Playwright) on the demo data: no page scrolls sideways, buttons keep their words on one
line, and on a phone the menu sits behind a button that opens it (with a mouse, with the keyboard,
and stacked under the header when JavaScript is off).

Skipped without ``/usr/bin/chromium`` or the ``playwright`` package (a failure when
``MSERVICES_TEST_REQUIRE_SERVICES=1``), like the other browser tests. Both languages are checked
(English words are longer). Set ``MSERVICES_TEST_SCREENSHOTS`` to a directory to keep a full-page
screenshot of every page at both widths (``layout-<who>-<language>-<page>-<width>.png``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from server.demo import load_demo
from server.services import Services
from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES, Client

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, BrowserContext, Page, expect  # noqa: E402 - needs the check

PHONE = 390
DESKTOP = 1280
HEIGHT = {PHONE: 844, DESKTOP: 900}
ORDER = "{order}"
"""Stands for the customer's demo order id in a path."""

ADMIN_PAGES = (
    "/",
    "/orders",
    "/admin/menus",
    "/admin/roles",
    "/admin/users",
    "/admin/orders",
    "/admin/audit",
    "/downloads",
    "/chat",
    "/robbit",
    "/ticker/page",
    "/cookie",
    "/docs",
    "/account",
    "/no-such-page",
)
CUSTOMER_PAGES = (
    "/",
    "/orders",
    f"/order/1/{ORDER}",
    f"/order/3/{ORDER}",
    "/chat",
    "/robbit",
    "/ticker/page",
    "/cookie",
    "/docs",
    "/account",
    "/admin/menus",  # 403
    "/no-such-page",  # 404
)
VISITOR_PAGES = ("/", "/login", "/signup", "/forgot", "/docs", "/cookie", "/no-such-page")

OVERFLOW = """() => {
  const root = document.documentElement;
  const wide = [...document.querySelectorAll("body *")]
    .filter((node) => node.getBoundingClientRect().right > window.innerWidth + 0.5)
    .filter((node) => !node.closest("[data-scroll-box], .table-scroll, pre"))
    .slice(0, 5)
    .map((node) => node.tagName.toLowerCase() + "." + [...node.classList].join("."));
  return {scrollWidth: root.scrollWidth, innerWidth: window.innerWidth, wide};
}"""
"""The page's width against the window's, and the first few elements sticking out (for the
message)."""

WRAPPED_BUTTONS = """() => [...document.querySelectorAll("button, .button")]
  .filter((button) => button.offsetParent !== null && button.textContent.trim())
  .filter((button) => {
    const tops = new Set();
    const texts = document.createTreeWalker(button, NodeFilter.SHOW_TEXT);
    for (let text = texts.nextNode(); text; text = texts.nextNode()) {
      const range = document.createRange();
      range.selectNodeContents(text);
      for (const rect of range.getClientRects()) tops.add(Math.round(rect.top));
    }
    return tops.size > 1;
  })
  .map((button) => button.textContent.trim())"""
"""The visible buttons whose words break over more than one line."""


@pytest.fixture
async def passwords(services: Services) -> dict[str, str]:
    """Load the demo (roles admin/agent/customer and their menus); the users' passwords."""
    async with services.sessions() as session, session.begin():
        result = await load_demo(session, services.passwords)
    return result.new_credentials


async def new_context(
    browser: Browser,
    client: Client,
    width: int,
    *,
    javascript: bool = True,
    locale: str = "zh-CN",
) -> BrowserContext:
    """A fresh context (own cookies) at ``width`` × a typical height for that width, whose
    browser asks for ``locale`` (``Accept-Language``)."""
    context = await browser.new_context(
        base_url=client.base_url,
        viewport={"width": width, "height": HEIGHT[width]},
        locale=locale,
        java_script_enabled=javascript,
    )
    context.set_default_timeout(10_000)
    return context


async def logged_in(
    browser: Browser,
    client: Client,
    width: int,
    name: str,
    password: str,
    locale: str = "zh-CN",
) -> Page:
    """A page at ``width``, logged in through the form (which must itself be usable there)."""
    page = await (await new_context(browser, client, width, locale=locale)).new_page()
    await page.goto("/login")
    await page.locator("form.form input[name=name]").fill(name)
    await page.locator("form.form input[name=pwd]").fill(password)
    await page.locator("form.form button[type=submit]").click()
    await page.wait_for_url(client.base_url + "/")
    await expect(page.locator(".flash")).to_contain_text(name)
    return page


async def keep_screenshot(page: Page, name: str) -> None:
    """Save a full-page ``<name>.png`` into ``MSERVICES_TEST_SCREENSHOTS`` when that is set."""
    if directory := os.environ.get("MSERVICES_TEST_SCREENSHOTS"):
        await page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)


async def demo_order_id(page: Page) -> str:
    """The id of the customer's demo order, read from the links on /orders."""
    await page.goto("/orders")
    href = await page.locator('a[href^="/order/2/"]').first.get_attribute("href")
    assert href is not None
    return href.rsplit("/", 1)[-1]


async def check_pages(page: Page, who: str, paths: tuple[str, ...], width: int) -> list[str]:
    """Open each path; what overflows sideways or breaks a button's words, as readable lines."""
    order = await demo_order_id(page) if any(ORDER in path for path in paths) else ""
    problems: list[str] = []
    for path in paths:
        url = path.replace(ORDER, order)
        response = await page.goto(url)
        assert response is not None, url
        assert response.status in (200, 403, 404), f"{who} {url}: HTTP {response.status}"
        await page.wait_for_load_state("load")
        measured = await page.evaluate(OVERFLOW)
        if measured["scrollWidth"] > measured["innerWidth"]:
            problems.append(
                f"{who} {url} at {width}px: page is {measured['scrollWidth']}px wide"
                f" (sticking out: {measured['wide']})"
            )
        wrapped = await page.evaluate(WRAPPED_BUTTONS)
        if wrapped:
            problems.append(f"{who} {url} at {width}px: buttons broken over lines: {wrapped}")
        slug = re.sub(r"[^a-z0-9]+", "-", url.lower()).strip("-") or "home"
        await keep_screenshot(page, f"layout-{who}-{slug}-{width}")
    return problems


async def every_role(
    browser: Browser, client: Client, passwords: dict[str, str], width: int, locale: str
) -> list[tuple[str, Page, tuple[str, ...]]]:
    """A page for the demo admin, the customer and a visitor, each with the paths it opens."""
    admin = await logged_in(browser, client, width, "admin", passwords["admin"], locale)
    customer = await logged_in(browser, client, width, "customer", passwords["customer"], locale)
    visitor = await (await new_context(browser, client, width, locale=locale)).new_page()
    return [
        ("admin", admin, ADMIN_PAGES),
        ("customer", customer, CUSTOMER_PAGES),
        ("visitor", visitor, VISITOR_PAGES),
    ]


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
@pytest.mark.parametrize("width", [PHONE, DESKTOP])
async def test_no_page_scrolls_sideways_and_no_button_breaks_its_words(
    browser: Browser, client: Client, passwords: dict[str, str], width: int, locale: str
) -> None:
    problems = []
    for who, page, paths in await every_role(browser, client, passwords, width, locale):
        problems += await check_pages(page, f"{who}-{locale}", paths, width)

    assert not problems, "\n".join(problems)


async def test_on_a_phone_the_menu_button_opens_and_closes_the_menu(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    page = await logged_in(browser, client, PHONE, "admin", passwords["admin"])
    await page.goto("/admin/users")
    button = page.locator("header button.nav-toggle")
    drawer = page.locator("#site-menu")
    users_link = drawer.get_by_role("link", name="用户管理")

    await expect(button).to_be_visible()
    await expect(button).to_have_attribute("aria-expanded", "false")
    await expect(button).to_have_attribute("aria-controls", "site-menu")
    await expect(users_link).to_be_hidden()
    await expect(page.locator("nav.nav")).to_be_hidden()

    await button.click()
    await expect(button).to_have_attribute("aria-expanded", "true")
    await expect(users_link).to_be_visible()
    await expect(drawer.get_by_role("link", name="首页")).to_be_visible()
    await keep_screenshot(page, f"layout-admin-menu-open-{PHONE}")
    assert (await page.evaluate(OVERFLOW))["scrollWidth"] <= PHONE

    await button.click()
    await expect(button).to_have_attribute("aria-expanded", "false")
    await expect(users_link).to_be_hidden()

    await button.focus()
    await page.keyboard.press("Enter")
    await expect(users_link).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(users_link).to_be_hidden()
    await expect(button).to_be_focused()

    await page.keyboard.press("Space")
    await expect(users_link).to_be_visible()
    await users_link.click()
    await page.wait_for_url("**/admin/users")
    await expect(page.locator("h1")).to_have_text("用户管理")


async def test_on_a_desktop_the_nav_and_sidebar_show_without_a_menu_button(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    page = await logged_in(browser, client, DESKTOP, "admin", passwords["admin"])

    await expect(page.locator("header button.nav-toggle")).to_be_hidden()
    await expect(page.locator("nav.nav").get_by_role("link", name="下载")).to_be_visible()
    await expect(page.locator("aside.sidebar").get_by_role("link", name="用户管理")).to_be_visible()
    nav_box = await page.locator("nav.nav").bounding_box()
    brand_box = await page.locator("header .brand").bounding_box()
    assert nav_box is not None and brand_box is not None
    assert nav_box["height"] < 2 * brand_box["height"], "the top nav is one row"


async def test_without_javascript_a_phone_shows_the_menu_stacked_under_the_header(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    page = await (await new_context(browser, client, PHONE, javascript=False)).new_page()
    await page.goto("/docs")

    await expect(page.locator("header button.nav-toggle")).to_be_hidden()
    await expect(page.locator("#site-menu").get_by_role("link", name="首页")).to_be_visible()
    header = await page.locator("header").bounding_box()
    menu = await page.locator("#site-menu").bounding_box()
    main = await page.locator("main").bounding_box()
    assert header is not None and menu is not None and main is not None
    assert header["y"] + header["height"] <= menu["y"] < main["y"], "header, menu, content"
    assert menu["width"] > PHONE * 0.8, "the menu takes the width rather than a column"
    await keep_screenshot(page, f"layout-visitor-nojs-docs-{PHONE}")

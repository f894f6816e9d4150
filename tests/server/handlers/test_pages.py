"""Pages: the index shows the menus granted to anonymous visitors, through Nav and Menu; the
error pages show who is looking; menus meant for visitors or members are shown to them only."""

from __future__ import annotations

import re

import pytest

from repositories.errors import DatabaseUnavailable
from repositories.menus import MenuRepository
from repositories.roles import RoleRepository
from server.menu_access import ANONYMOUS_ROLE
from server.services import Services
from tests.conftest import Client, Response
from tests.server.handlers.test_admin_pages import Browser


async def grant_anonymous(services: Services) -> None:
    """Publish a small tree to visitors: Home, and Docs with a nested API page; hide Admin."""
    async with services.sessions() as session, session.begin():
        menus = MenuRepository(session)
        roles = RoleRepository(session)
        home = await menus.add(title="Home", url="/")
        docs = await menus.add(title="Docs", url=None, sort=1)
        api = await menus.add(title="API <b>", url="/docs/api", parent_id=docs.id)
        await menus.add(title="Admin", url="/admin", sort=2)
        anonymous = await roles.add(name=ANONYMOUS_ROLE)
        await roles.set_menus(anonymous.id, {home.id, api.id})


async def test_the_index_shows_only_the_menus_granted_to_visitors(
    client: Client, services: Services
) -> None:
    await grant_anonymous(services)
    response = await client.get("/")
    assert response.status == 200
    nav = re.search(r'<nav class="nav".*?</nav>', response.text, re.S)
    assert nav is not None
    assert "Home" in nav.group(0) and "Docs" in nav.group(0)
    assert "API" not in nav.group(0), "Nav shows top-level menus only"
    sidebar = re.search(r'<aside class="sidebar"[^>]*>.*?</aside>', response.text, re.S)
    assert sidebar is not None
    assert 'href="/docs/api"' in sidebar.group(0), "Menu shows the nested tree"
    assert "Admin" not in response.text


async def test_menu_titles_are_escaped(client: Client, services: Services) -> None:
    await grant_anonymous(services)
    response = await client.get("/")
    assert "API &lt;b&gt;" in response.text
    assert "API <b>" not in response.text


async def test_the_index_renders_without_any_menus_in_chinese_by_default(client: Client) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert '<html lang="zh-CN">' in response.text
    assert "还没有为访客发布任何菜单。" in response.text
    assert "一个原生异步的 Tornado 服务" in response.text
    assert "种子项目演示：" in response.text
    assert "An async-native" not in response.text and "Seed demos" not in response.text


async def test_the_index_speaks_english_to_a_browser_that_asks_for_it(client: Client) -> None:
    response = await client.get("/", headers={"Accept-Language": "en-US,en;q=0.8"})
    assert response.status == 200
    assert '<html lang="en-US">' in response.text
    assert "No menus are published for visitors yet." in response.text
    assert "An async-native Tornado service" in response.text
    assert "Seed demos:" in response.text and ">Cookies</a>" in response.text
    assert "<title>mservices · Home</title>" in response.text
    assert not re.search(r"[\u4e00-\u9fff]", response.text.replace("中文", "")), (
        "no Chinese on an English page but the switch naming Chinese"
    )


async def test_static_assets_are_served_under_s_with_a_version(client: Client) -> None:
    page = await client.get("/")
    match = re.search(r'href="(/s/css/site\.css\?v=[0-9a-f]+)"', page.text)
    assert match is not None
    asset = await client.get(match.group(1))
    assert asset.status == 200
    assert "text/css" in asset.headers["Content-Type"]


# -- who is looking: menus by audience, error pages ---------------------------------------------


def nav_titles(page: Response) -> list[str]:
    """The titles in the top navigation of ``page``."""
    nav = re.search(r'<nav class="nav".*?</nav>', page.text, re.S)
    assert nav is not None
    return re.findall(r">([^<>]+)</(?:a|span)>", nav.group(0))


def account_area(page: Response) -> str:
    """The account area of the page header."""
    area = re.search(r'<div class="account">.*?</div>', page.text, re.S)
    assert area is not None
    return area.group(0)


@pytest.fixture
async def customer(client: Client, demo: dict[str, str]) -> Browser:
    """A browser logged in as the demo ``customer``."""
    browser = Browser(client)
    await browser.login("customer", demo["customer"])
    return browser


async def test_a_logged_in_superuser_is_not_shown_the_visitors_login_menu(
    client: Client, demo: dict[str, str]
) -> None:
    admin = Browser(client)
    await admin.login("admin", demo["admin"])
    page = await admin.get("/")
    assert "首页" in nav_titles(page) and "系统管理" in nav_titles(page)
    assert "登录" not in nav_titles(page)
    assert 'href="/login"' not in page.text
    visitor = await client.get("/")
    assert "登录" in nav_titles(visitor)


async def test_a_menu_for_members_is_hidden_from_visitors_even_when_granted(
    client: Client, services: Services
) -> None:
    async with services.sessions() as session, session.begin():
        menus = MenuRepository(session)
        roles = RoleRepository(session)
        home = await menus.add(title="Home", url="/")
        mine = await menus.add(title="Mine", url="/mine", sort=1, audience="members")
        below = await menus.add(title="Below", url="/mine/below", parent_id=mine.id)
        anonymous = await roles.add(name=ANONYMOUS_ROLE)
        await roles.set_menus(anonymous.id, {home.id, mine.id, below.id})
    page = await client.get("/")
    assert nav_titles(page) == ["Home"]
    assert "/mine" not in page.text, "a menu left out takes its subtree with it"


async def test_a_logged_in_users_404_page_shows_their_name_and_menus_and_no_login_link(
    customer: Browser,
) -> None:
    page = await customer.get("/nothing-here")
    assert page.status == 404
    assert ">customer</a>" in account_area(page)
    assert "我的订单" in nav_titles(page) and "客服中心" in nav_titles(page)
    assert "登录" not in nav_titles(page)
    assert 'href="/login"' not in page.text
    assert '<a class="error-home" href="/">返回首页</a>' in page.text
    assert "找不到这个页面" in page.text


async def test_a_logged_in_users_403_page_shows_their_name_and_menus_and_no_login_link(
    customer: Browser,
) -> None:
    page = await customer.get("/admin/menus")
    assert page.status == 403
    assert ">customer</a>" in account_area(page)
    assert "我的订单" in nav_titles(page)
    assert 'href="/login"' not in page.text
    assert "没有权限访问此页面" in page.text


async def test_a_visitors_404_page_offers_the_login_link_and_the_visitors_menus(
    client: Client, demo: dict[str, str]
) -> None:
    await client.get("/")  # the visitors' menus are cached by any page; a 404 warms them too
    page = await client.get("/nothing-here", headers={"Accept": "text/html"})
    assert page.status == 404
    assert 'href="/login"' in account_area(page)
    assert nav_titles(page) == ["首页", "登录"]


async def test_an_error_page_speaks_the_language_of_the_browser(client: Client) -> None:
    page = await client.get(
        "/nothing-here", headers={"Accept": "text/html", "Accept-Language": "en"}
    )
    assert page.status == 404
    assert "This page cannot be found" in page.text
    assert '<a class="error-home" href="/">Back to the home page</a>' in page.text
    assert "Request ID:" in page.text
    assert "返回首页" not in page.text and "请求编号" not in page.text


def failing_sessions() -> None:
    """A session factory while the database is down."""
    raise DatabaseUnavailable("the database is down")


async def test_an_error_page_shows_cached_menus_when_the_menu_lookup_fails(
    customer: Browser, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await customer.get("/")).status == 200  # the customer's menus are now cached
    monkeypatch.setattr(services.menus, "_sessions", failing_sessions)
    page = await customer.get("/nothing-here")
    assert page.status == 404
    assert "我的订单" in nav_titles(page)
    assert ">customer</a>" in account_area(page)


async def test_an_outage_of_the_menus_still_renders_the_error_page_for_the_caller(
    customer: Browser, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.menus.invalidate()
    monkeypatch.setattr(services.menus, "_sessions", failing_sessions)
    page = await customer.get("/")
    assert page.status == 503
    assert page.headers["Content-Type"].startswith("text/html")
    assert ">customer</a>" in account_area(page)
    assert 'href="/login"' not in page.text
    assert nav_titles(page) == [], "no menus known: none shown, rather than no page"
    missing = await customer.get("/nothing-here")
    assert missing.status == 404
    assert ">customer</a>" in account_area(missing)

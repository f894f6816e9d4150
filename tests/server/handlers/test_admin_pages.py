"""The admin pages: who may open them, every form action and its flash, refusals that change
nothing, XSRF, and escaping of whatever administrators type."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from repositories.menus import MenuRepository
from repositories.models import AuditEntry, Menu, User
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from server.handlers.admin_pages import PAGE_SIZE, MenuOption, menu_options
from server.handlers.base import LANGUAGE_COOKIE, SESSION_COOKIE
from server.services import Services
from tests.conftest import Client, Response
from tests.grants import grant

HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
ADMIN_PAGES = ["/admin/menus", "/admin/roles", "/admin/users"]
FLASH = re.compile(r'<p class="flash flash-(?P<level>\w+)" role="status">(?P<text>.*?)</p>', re.S)

Fields = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass
class Browser:
    """A client with a cookie jar that logs in through the form and posts forms with XSRF."""

    client: Client
    cookies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every request (e.g. ``Accept-Language``)."""

    def remember(self, response: Response) -> None:
        """Keep the cookies ``response`` sets; forget the ones it clears."""
        for header in response.headers.get_list("Set-Cookie"):
            pair = header.split(";", 1)[0]
            name, _, value = pair.partition("=")
            if value in ("", '""'):
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value

    def read_english(self) -> None:
        """Ask for English pages from now on, as the header's language switch does."""
        self.cookies[LANGUAGE_COOKIE] = "en_US"

    def cookie_header(self) -> dict[str, str]:
        """The Cookie header for the jar."""
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items())}

    async def get(self, path: str) -> Response:
        """GET ``path`` with the jar's cookies."""
        response = await self.client.get(path, headers={**self.headers, **self.cookie_header()})
        self.remember(response)
        return response

    async def post(self, path: str, fields: Fields = (), *, xsrf: bool = True) -> Response:
        """POST ``fields`` as a form (with the ``_xsrf`` field unless told not to)."""
        pairs = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
        if xsrf:
            if "_xsrf" not in self.cookies:
                await self.get("/login")
            pairs.append(("_xsrf", self.cookies["_xsrf"]))
        headers = {
            **self.headers,
            **self.cookie_header(),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        response = await self.client.post(path, body=urlencode(pairs), headers=headers)
        self.remember(response)
        return response

    async def login(self, name: str, password: str) -> None:
        """Log in through ``/login`` (GET for the XSRF cookie, then POST the form)."""
        page = await self.get("/login")
        assert page.status == 200
        assert "_xsrf" in self.cookies
        response = await self.post("/login", {"name": name, "pwd": password, "next": "/"})
        assert response.status == 302, response.text
        assert SESSION_COOKIE in self.cookies

    async def act(self, path: str, fields: Fields = (), *, back: str | None = None) -> Flash:
        """POST a form action, check it redirects back, follow and return the flash shown."""
        response = await self.post(path, fields)
        assert response.status == 302, response.text
        location = response.headers["Location"]
        if back is not None:
            assert location == back
        page = await self.get(location)
        assert page.status == 200
        flash = flash_of(page)
        assert flash is not None, "every change ends with a flash message"
        return flash


@dataclass(frozen=True)
class Flash:
    """A flash message as shown on a page."""

    level: str
    text: str


def flash_of(page: Response) -> Flash | None:
    """The flash message on ``page``, unescaped, or None."""
    match = FLASH.search(page.text)
    if match is None:
        return None
    return Flash(match["level"], html.unescape(match["text"]))


@pytest.fixture
async def admin(client: Client, demo: dict[str, str]) -> Browser:
    """A browser logged in as the demo superuser ``admin``."""
    browser = Browser(client)
    await browser.login("admin", demo["admin"])
    return browser


@pytest.fixture
async def customer(client: Client, demo: dict[str, str]) -> Browser:
    """A browser logged in as the demo ``customer``."""
    browser = Browser(client)
    await browser.login("customer", demo["customer"])
    return browser


async def menu_named(services: Services, title: str) -> Menu | None:
    async with services.sessions() as session:
        return await session.scalar(select(Menu).where(Menu.title == title))


async def menu_id(services: Services, title: str) -> int:
    menu = await menu_named(services, title)
    assert menu is not None, title
    return menu.id


async def all_menus(services: Services) -> list[tuple[int, str, str | None, int | None, int]]:
    async with services.sessions() as session:
        menus = await MenuRepository(session).list()
        return [(m.id, m.title, m.url, m.parent_id, m.sort) for m in menus]


async def role_id(services: Services, name: str) -> int:
    async with services.sessions() as session:
        role = await RoleRepository(session).get_by_name(name)
        assert role is not None, name
        return role.id


async def role_menu_ids(services: Services, name: str) -> set[int]:
    async with services.sessions() as session:
        return await RoleRepository(session).menu_ids(await role_id(services, name))


async def user_named(services: Services, name: str) -> User:
    async with services.sessions() as session:
        user = await UserRepository(session).get_by_name(name)
        assert user is not None, name
        return user


async def user_role_ids(services: Services, name: str) -> set[int]:
    user = await user_named(services, name)
    async with services.sessions() as session:
        return await UserRepository(session).role_ids(user.id)


async def add_user(services: Services, name: str, password: str, roles: Iterable[str]) -> None:
    async with services.sessions() as session, session.begin():
        users = UserRepository(session)
        user = await users.add(name=name, password_hash=await services.passwords.hash(password))
        wanted = set()
        for role in roles:
            found = await RoleRepository(session).get_by_name(role)
            assert found is not None
            wanted.add(found.id)
        await users.set_roles(user.id, wanted)


async def new_user_holding(client: Client, services: Services, name: str, *codes: str) -> Browser:
    """A browser logged in as a new user ``name`` whose only role grants exactly ``codes``."""
    password = f"{name} password 1"
    await add_user(services, name, password, [])
    await grant(services, name, *codes)
    browser = Browser(client)
    await browser.login(name, password)
    return browser


# -- who may open the pages ------------------------------------------------------------------


@pytest.mark.parametrize("path", ADMIN_PAGES)
async def test_anonymous_visitors_are_sent_to_the_login_form(
    client: Client, demo: dict[str, str], path: str
) -> None:
    response = await client.get(path)
    assert response.status == 302
    assert response.headers["Location"] == "/login?" + urlencode({"next": path})


@pytest.mark.parametrize("path", ADMIN_PAGES)
async def test_a_customer_gets_the_403_page(customer: Browser, path: str) -> None:
    response = await customer.get(path)
    assert response.status == 403
    assert response.headers["Content-Type"].startswith("text/html")
    assert '<h1 class="error-status">403</h1>' in response.text


async def test_a_customer_cannot_post_an_admin_action(
    customer: Browser, services: Services
) -> None:
    before = await all_menus(services)
    response = await customer.post("/admin/menus/create", {"title": "sneaky"})
    assert response.status == 403
    assert await all_menus(services) == before


async def test_an_anonymous_post_goes_to_the_login_form_and_changes_nothing(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    browser = Browser(client)
    response = await browser.post("/admin/roles/create", {"name": "sneaky"})
    assert response.status == 302
    assert response.headers["Location"].startswith("/login?")
    async with services.sessions() as session:
        assert await RoleRepository(session).get_by_name("sneaky") is None


@pytest.mark.parametrize(
    ("path", "heading"),
    [("/admin/menus", "菜单管理"), ("/admin/roles", "角色管理"), ("/admin/users", "用户管理")],
)
async def test_the_admin_opens_every_admin_page(admin: Browser, path: str, heading: str) -> None:
    response = await admin.get(path)
    assert response.status == 200
    assert f"<h1>{heading}</h1>" in response.text
    assert "/s/css/admin.css?v=" in response.text
    assert "/s/js/admin.js?v=" in response.text
    assert response.text.count('name="_xsrf"') == response.text.count('method="post"')


async def test_a_non_superuser_with_the_admin_role_opens_the_admin_pages(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    await add_user(services, "deputy", "deputy password 1", ["admin"])
    deputy = Browser(client)
    await deputy.login("deputy", "deputy password 1")
    for path in ADMIN_PAGES:
        assert (await deputy.get(path)).status == 200


async def test_posting_without_xsrf_is_refused(admin: Browser, services: Services) -> None:
    before = await all_menus(services)
    response = await admin.post("/admin/menus/create", {"title": "no token"}, xsrf=False)
    assert response.status == 403
    assert response.headers["Content-Type"].startswith("text/html")
    assert await all_menus(services) == before


async def test_posting_with_a_wrong_xsrf_token_is_refused(
    admin: Browser, services: Services
) -> None:
    response = await admin.post(
        "/admin/roles/create", [("name", "forged"), ("_xsrf", "2|00|00|00")], xsrf=False
    )
    assert response.status == 403
    async with services.sessions() as session:
        assert await RoleRepository(session).get_by_name("forged") is None


async def test_action_routes_answer_only_post(admin: Browser) -> None:
    assert (await admin.get("/admin/menus/create")).status == 405
    assert (await admin.get("/admin/menus/1/delete")).status == 405


# -- the menu tree editor --------------------------------------------------------------------


async def test_the_editor_shows_the_tree_as_nested_lists_with_every_form(
    admin: Browser, services: Services
) -> None:
    page = (await admin.get("/admin/menus")).text
    system = await menu_id(services, "系统管理")
    menus = await menu_id(services, "菜单管理")
    node = re.search(rf'<li class="menu-node" data-menu-id="{system}">.*', page, re.S)
    assert node is not None
    assert f'data-menu-id="{menus}"' in node.group(0), "children are nested inside the parent"
    for action in ("update", "move", "reorder", "delete"):
        assert f'action="/admin/menus/{menus}/{action}"' in page
    assert 'name="cascade"' in page
    assert 'action="/admin/menus/create"' in page


async def test_a_menu_cannot_be_offered_a_move_under_itself_or_its_descendants(
    admin: Browser, services: Services
) -> None:
    page = (await admin.get("/admin/menus")).text
    system = await menu_id(services, "系统管理")
    child = await menu_id(services, "菜单管理")
    move_form = re.search(rf'action="/admin/menus/{system}/move">(.*?)</form>', page, re.S)
    assert move_form is not None
    assert f'value="{system}"' not in move_form.group(1)
    assert f'value="{child}"' not in move_form.group(1)
    child_move = re.search(rf'action="/admin/menus/{child}/move">(.*?)</form>', page, re.S)
    assert child_move is not None
    assert f'<option value="{system}" selected>' in child_move.group(1)


async def test_creating_a_menu_puts_it_last_under_its_parent(
    admin: Browser, services: Services
) -> None:
    parent = await menu_id(services, "系统管理")
    flash = await admin.act(
        "/admin/menus/create",
        {
            "title": "报表",
            "url": "/admin/reports",
            "note": "who did what",
            "parent_id": str(parent),
            "visible": "1",
            "permission": "audit.view",
        },
        back="/admin/menus",
    )
    assert flash == Flash("success", "已创建菜单「报表」")
    menu = await menu_named(services, "报表")
    assert menu is not None
    assert (menu.url, menu.note, menu.parent_id, menu.visible, menu.permission) == (
        "/admin/reports",
        "who did what",
        parent,
        True,
        "audit.view",
    )
    siblings = [row for row in await all_menus(services) if row[3] == parent]
    assert max(row[4] for row in siblings) == menu.sort
    assert [row[1] for row in siblings][-1] == "报表"


async def test_creating_a_top_level_hidden_menu_without_url(
    admin: Browser, services: Services
) -> None:
    flash = await admin.act("/admin/menus/create", {"title": "草稿", "url": "", "parent_id": ""})
    assert flash.level == "success"
    menu = await menu_named(services, "草稿")
    assert menu is not None
    assert (menu.url, menu.note, menu.parent_id, menu.visible) == (None, None, None, False)


async def test_updating_a_menu_renames_relinks_and_hides_it(
    admin: Browser, services: Services
) -> None:
    target = await menu_id(services, "下载")
    flash = await admin.act(
        f"/admin/menus/{target}/update",
        {"title": "文件下载", "url": "/files", "note": "big files"},
    )
    assert flash == Flash("success", "已保存菜单「文件下载」")
    menu = await menu_named(services, "文件下载")
    assert menu is not None
    assert (menu.id, menu.url, menu.note, menu.visible) == (target, "/files", "big files", False)


async def test_saving_a_menu_without_changes_says_so(admin: Browser, services: Services) -> None:
    target = await menu_id(services, "下载")
    flash = await admin.act(
        f"/admin/menus/{target}/update",
        {"title": "下载", "url": "/downloads", "visible": "1", "permission": "downloads.use"},
    )
    assert flash == Flash("info", "菜单「下载」没有改动")


async def test_moving_a_menu_under_another_parent(admin: Browser, services: Services) -> None:
    target = await menu_id(services, "下载")
    parent = await menu_id(services, "客服中心")
    flash = await admin.act(f"/admin/menus/{target}/move", {"parent_id": str(parent)})
    assert flash == Flash("success", "已将菜单「下载」移到「客服中心」下")
    menu = await menu_named(services, "下载")
    assert menu is not None and menu.parent_id == parent
    flash = await admin.act(f"/admin/menus/{target}/move", {"parent_id": ""})
    assert flash == Flash("success", "已将菜单「下载」移到顶级")
    menu = await menu_named(services, "下载")
    assert menu is not None and menu.parent_id is None


async def test_moving_a_menu_under_its_own_descendant_is_refused(
    admin: Browser, services: Services
) -> None:
    system = await menu_id(services, "系统管理")
    child = await menu_id(services, "角色管理")
    before = await all_menus(services)
    flash = await admin.act(f"/admin/menus/{system}/move", {"parent_id": str(child)})
    assert flash == Flash(
        "error", f"菜单 {system} 不能移到菜单 {child} 之下：那样它会成为自己的上级"
    )
    assert await all_menus(services) == before


async def test_reordering_swaps_a_menu_with_its_sibling(admin: Browser, services: Services) -> None:
    parent = await menu_id(services, "系统管理")

    async def order() -> list[str]:
        rows = [row for row in await all_menus(services) if row[3] == parent]
        return [row[1] for row in rows]

    assert await order() == ["菜单管理", "角色管理", "用户管理", "审计日志"]
    roles = await menu_id(services, "角色管理")
    flash = await admin.act(f"/admin/menus/{roles}/reorder", {"direction": "up"})
    assert flash == Flash("success", "已上移菜单「角色管理」")
    assert await order() == ["角色管理", "菜单管理", "用户管理", "审计日志"]
    flash = await admin.act(f"/admin/menus/{roles}/reorder", {"direction": "down"})
    assert flash == Flash("success", "已下移菜单「角色管理」")
    assert await order() == ["菜单管理", "角色管理", "用户管理", "审计日志"]
    audit = await menu_id(services, "审计日志")
    flash = await admin.act(f"/admin/menus/{audit}/reorder", {"direction": "down"})
    assert flash == Flash("info", "菜单「审计日志」已在最后")
    assert await order() == ["菜单管理", "角色管理", "用户管理", "审计日志"]


async def test_reordering_siblings_with_equal_sort_keys_renumbers_them(
    admin: Browser, services: Services
) -> None:
    for title in ("甲", "乙", "丙"):
        async with services.sessions() as session, session.begin():
            await MenuRepository(session).add(
                title=title, parent_id=await menu_id(services, "下载")
            )
    third = await menu_id(services, "丙")
    flash = await admin.act(f"/admin/menus/{third}/reorder", {"direction": "up"})
    assert flash.level == "success"
    parent = await menu_id(services, "下载")
    rows = [row for row in await all_menus(services) if row[3] == parent]
    assert [row[1] for row in rows] == ["甲", "丙", "乙"]
    assert [row[4] for row in rows] == [0, 1, 2]


async def test_deleting_a_menu_with_children_needs_the_checkbox(
    admin: Browser, services: Services
) -> None:
    service = await menu_id(services, "客服中心")
    before = await all_menus(services)
    flash = await admin.act(f"/admin/menus/{service}/delete")
    assert flash == Flash(
        "error", f"菜单 {service} 有子菜单：请先删除子菜单，或连同子菜单一起删除（cascade）"
    )
    assert await all_menus(services) == before
    flash = await admin.act(f"/admin/menus/{service}/delete", {"cascade": "1"})
    assert flash == Flash("success", "已删除菜单「客服中心」及其 2 个子菜单")
    titles = {row[1] for row in await all_menus(services)}
    assert not titles & {"客服中心", "聊天室", "客服在线"}


async def test_deleting_a_leaf_menu(admin: Browser, services: Services) -> None:
    target = await menu_id(services, "下载")
    flash = await admin.act(f"/admin/menus/{target}/delete")
    assert flash == Flash("success", "已删除菜单「下载」")
    assert await menu_named(services, "下载") is None


async def test_a_duplicate_title_is_refused_and_nothing_is_created(
    admin: Browser, services: Services
) -> None:
    before = await all_menus(services)
    response = await admin.post("/admin/menus/create", {"title": "下载", "visible": "1"})
    assert response.status == 409
    flash = flash_of(response)
    assert flash is not None and flash.level == "error"
    assert flash.text == "这里已有标题为「下载」的菜单"
    assert await all_menus(services) == before


async def test_renaming_to_a_sibling_title_is_refused(admin: Browser, services: Services) -> None:
    target = await menu_id(services, "下载")
    before = await all_menus(services)
    response = await admin.post(f"/admin/menus/{target}/update", {"title": "首页", "visible": "1"})
    assert response.status == 409
    flash = flash_of(response)
    assert flash is not None and flash.level == "error"
    assert await all_menus(services) == before


async def test_invalid_menu_fields_are_listed_in_the_flash(
    admin: Browser, services: Services
) -> None:
    before = await all_menus(services)
    response = await admin.post(
        "/admin/menus/create", {"title": "", "url": "http://elsewhere", "parent_id": "x"}
    )
    assert response.status == 422
    flash = flash_of(response)
    assert flash is not None and flash.level == "error"
    assert flash.text.startswith("输入无效（")
    for name in ("title", "url", "parent_id"):
        assert f"{name}：" in flash.text
    assert "url：必须是以 / 开头的本站路径（不能以 // 开头）" in flash.text
    assert await all_menus(services) == before


async def test_acting_on_a_missing_menu_shows_not_found(admin: Browser) -> None:
    flash = await admin.act("/admin/menus/99999/delete")
    assert flash == Flash("error", "菜单 99999 不存在")
    admin.read_english()
    flash = await admin.act("/admin/menus/99999/delete")
    assert flash == Flash("error", "menu 99999 does not exist")


async def test_deleting_the_editors_menu_leaves_its_admin_the_editor(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    """The permission, not a menu an admin can edit, opens the page: deleting the menu only
    removes the link."""
    await add_user(services, "deputy", "deputy password 1", ["admin"])
    deputy = Browser(client)
    await deputy.login("deputy", "deputy password 1")
    editor = await menu_id(services, "菜单管理")
    flash = await deputy.act(f"/admin/menus/{editor}/delete")
    assert flash == Flash("success", "已删除菜单「菜单管理」")
    page = await deputy.get("/admin/menus")
    assert page.status == 200
    assert 'href="/admin/menus"' not in page.text


# -- roles -----------------------------------------------------------------------------------


async def test_the_roles_page_lists_roles_with_an_indented_checklist(
    admin: Browser, services: Services
) -> None:
    page = (await admin.get("/admin/roles")).text
    customer = await role_id(services, "customer")
    orders = await menu_id(services, "我的订单")
    chat = await menu_id(services, "聊天室")
    card = re.search(
        rf'<section class="admin-card role-card" id="role-{customer}".*?</section>', page, re.S
    )
    assert card is not None
    assert f'value="{orders}" checked>' in card.group(0)
    indented = f'style="--depth: 1"><input type="checkbox" name="menu_id" value="{chat}" checked>'
    assert indented in card.group(0)
    downloads = await menu_id(services, "下载")
    assert f'value="{downloads}">' in card.group(0), "ungranted menus are listed unchecked"


async def test_creating_renaming_and_deleting_a_role(admin: Browser, services: Services) -> None:
    flash = await admin.act("/admin/roles/create", {"name": "auditor", "description": ""})
    assert flash == Flash("success", "已创建角色「auditor」")
    auditor = await role_id(services, "auditor")
    flash = await admin.act(
        f"/admin/roles/{auditor}/update", {"name": "reviewer", "description": "reads the logs"}
    )
    assert flash == Flash("success", "已保存角色「reviewer」")
    async with services.sessions() as session:
        role = await RoleRepository(session).get(auditor)
        assert (role.name, role.description) == ("reviewer", "reads the logs")
    flash = await admin.act(f"/admin/roles/{auditor}/delete")
    assert flash == Flash("success", "已删除角色「reviewer」")
    async with services.sessions() as session:
        assert await RoleRepository(session).get_by_name("reviewer") is None


async def test_a_duplicate_role_name_is_refused(admin: Browser, services: Services) -> None:
    flash = await admin.act("/admin/roles/create", {"name": "customer"})
    assert flash == Flash("error", "已有名为「customer」的角色")
    agent = await role_id(services, "agent")
    flash = await admin.act(f"/admin/roles/{agent}/update", {"name": "customer"})
    assert flash.level == "error"
    async with services.sessions() as session:
        assert (await RoleRepository(session).get(agent)).name == "agent"


async def test_an_invalid_role_name_lists_the_field(admin: Browser) -> None:
    flash = await admin.act("/admin/roles/create", {"name": "", "description": "x" * 300})
    assert flash.level == "error"
    assert "name：" in flash.text and "description：最多 255 个字符" in flash.text
    admin.read_english()
    flash = await admin.act("/admin/roles/create", {"name": "", "description": "x" * 300})
    assert flash.text.startswith("The input is not valid (")
    assert "description: must be at most 255 characters" in flash.text


async def test_saving_the_checklist_replaces_the_roles_menus(
    admin: Browser, services: Services, customer: Browser
) -> None:
    customer_role = await role_id(services, "customer")
    downloads = await menu_id(services, "下载")
    home = await menu_id(services, "首页")
    assert 'href="/downloads"' not in (await customer.get("/")).text
    flash = await admin.act(
        f"/admin/roles/{customer_role}/menus", [("menu_id", str(home)), ("menu_id", str(downloads))]
    )
    assert flash == Flash("success", "角色「customer」现在授予 2 个菜单")
    assert await role_menu_ids(services, "customer") == {home, downloads}
    page = (await customer.get("/")).text
    assert "我的订单" not in page
    assert 'href="/downloads"' not in page, "the menu needs downloads.use, which is not granted"
    flash = await admin.act(
        f"/admin/roles/{customer_role}/permissions",
        [("permission", "chat.use"), ("permission", "orders.use"), ("permission", "downloads.use")],
    )
    assert flash == Flash("success", "角色「customer」现在授予 3 项权限")
    assert 'href="/downloads"' in (await customer.get("/")).text
    assert (await customer.get("/downloads")).status == 200


async def test_a_checklist_with_an_unknown_menu_changes_nothing(
    admin: Browser, services: Services
) -> None:
    customer_role = await role_id(services, "customer")
    before = await role_menu_ids(services, "customer")
    flash = await admin.act(
        f"/admin/roles/{customer_role}/menus", [("menu_id", "99999"), ("menu_id", "1")]
    )
    assert flash == Flash("error", "菜单不存在：99999")
    assert await role_menu_ids(services, "customer") == before


async def test_removing_own_admin_access_is_refused_and_rolled_back(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    await add_user(services, "deputy", "deputy password 1", ["admin"])
    deputy = Browser(client)
    await deputy.login("deputy", "deputy password 1")
    admin_role = await role_id(services, "admin")
    async with services.sessions() as session:
        before = await RoleRepository(session).permissions(admin_role)
    keep = sorted(before - {"roles.change"})
    flash = await deputy.act(
        f"/admin/roles/{admin_role}/permissions", [("permission", code) for code in keep]
    )
    assert flash == Flash("error", "此更改会移除你自己的管理权限：roles.change")
    async with services.sessions() as session:
        after = await RoleRepository(session).permissions(admin_role)
    assert after == before, "the partial write was rolled back"
    flash = await deputy.act(f"/admin/roles/{admin_role}/delete")
    assert flash.level == "error"
    assert await role_id(services, "admin") == admin_role


# -- users -----------------------------------------------------------------------------------


async def test_the_users_page_lists_users_with_their_roles(
    admin: Browser, services: Services
) -> None:
    page = (await admin.get("/admin/users")).text
    customer = await user_named(services, "customer")
    customer_role = await role_id(services, "customer")
    row = re.search(rf'<tr data-user-id="{customer.id}">.*?</tr>', page, re.S)
    assert row is not None
    assert f'name="role_id" value="{customer_role}" checked>' in row.group(0)
    assert "已启用" in row.group(0)
    assert 'value="true">设为超级用户' in row.group(0)
    assert f'action="/admin/users/{customer.id}/revoke"' in row.group(0)
    assert "共 3 个用户" in page


async def test_the_users_page_searches_and_paginates(admin: Browser, services: Services) -> None:
    async with services.sessions() as session, session.begin():
        for number in range(PAGE_SIZE + 5):
            await UserRepository(session).add(name=f"bulk{number:03d}", password_hash="x")
    first = (await admin.get("/admin/users?q=bulk")).text
    assert f"共 {PAGE_SIZE + 5} 个用户" in first
    assert "bulk000" in first and f"bulk{PAGE_SIZE:03d}" not in first
    assert "第 1 / 2 页" in first
    assert 'href="/admin/users?q=bulk&amp;page=2" rel="next"' in first
    assert 'name="back" value="/admin/users?q=bulk"' in first
    second = (await admin.get("/admin/users?q=bulk&page=2")).text
    assert f"bulk{PAGE_SIZE:03d}" in second and "bulk000" not in second
    assert 'name="back" value="/admin/users?q=bulk&amp;page=2"' in second
    assert (await admin.get("/admin/users?page=banana")).status == 200
    assert "第 2 / 2 页" in (await admin.get("/admin/users?q=bulk&page=99")).text
    nothing = (await admin.get("/admin/users?q=%25")).text
    assert "没有匹配的用户" in nothing, "a % is searched literally"


async def test_deactivating_a_user_ends_their_sessions(
    admin: Browser, customer: Browser, services: Services
) -> None:
    user = await user_named(services, "customer")
    flash = await admin.act(
        f"/admin/users/{user.id}/status",
        {"is_active": "false", "back": "/admin/users?q=cust"},
        back="/admin/users?q=cust",
    )
    assert flash == Flash("success", "用户「customer」: 已停用")
    assert not (await user_named(services, "customer")).is_active
    assert (await customer.get("/")).status == 200
    assert SESSION_COOKIE not in customer.cookies, "the browser session ended"
    flash = await admin.act(f"/admin/users/{user.id}/status", {"is_active": "true"})
    assert flash == Flash("success", "用户「customer」: 已启用")
    assert (await user_named(services, "customer")).is_active


async def test_promoting_and_demoting_a_superuser(admin: Browser, services: Services) -> None:
    user = await user_named(services, "agent")
    flash = await admin.act(f"/admin/users/{user.id}/status", {"is_superuser": "true"})
    assert flash == Flash("success", "用户「agent」: 已设为超级用户")
    assert (await user_named(services, "agent")).is_superuser
    flash = await admin.act(f"/admin/users/{user.id}/status", {"is_superuser": "false"})
    assert flash == Flash("success", "用户「agent」: 已取消超级用户")
    assert not (await user_named(services, "agent")).is_superuser


async def test_the_last_superuser_cannot_demote_or_deactivate_themselves(
    admin: Browser, services: Services
) -> None:
    me = await user_named(services, "admin")
    admin.read_english()  # the message is the users repository's
    for fields in ({"is_superuser": "false"}, {"is_active": "false"}):
        flash = await admin.act(f"/admin/users/{me.id}/status", fields)
        assert flash == Flash("error", "the last active superuser cannot be removed")
        user = await user_named(services, "admin")
        assert user.is_superuser and user.is_active


async def test_an_invalid_status_value_lists_the_field(admin: Browser, services: Services) -> None:
    user = await user_named(services, "agent")
    flash = await admin.act(f"/admin/users/{user.id}/status", {"is_active": "perhaps"})
    assert flash.level == "error" and "is_active：必须是 true 或 false" in flash.text
    flash = await admin.act(f"/admin/users/{user.id}/status")
    assert flash.level == "error" and "请给出 is_active 或 is_superuser" in flash.text
    assert (await user_named(services, "agent")).is_active


async def test_setting_a_users_roles(admin: Browser, services: Services) -> None:
    user = await user_named(services, "agent")
    agent_role = await role_id(services, "agent")
    customer_role = await role_id(services, "customer")
    flash = await admin.act(
        f"/admin/users/{user.id}/roles",
        [("role_id", str(agent_role)), ("role_id", str(customer_role))],
    )
    assert flash == Flash("success", "用户「agent」现在有 2 个角色")
    assert await user_role_ids(services, "agent") == {agent_role, customer_role}
    flash = await admin.act(f"/admin/users/{user.id}/roles")
    assert flash == Flash("success", "用户「agent」现在有 0 个角色")
    assert await user_role_ids(services, "agent") == set()


async def test_a_user_taking_away_their_own_admin_role_is_refused(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    await add_user(services, "deputy", "deputy password 1", ["admin"])
    deputy = Browser(client)
    await deputy.login("deputy", "deputy password 1")
    me = await user_named(services, "deputy")
    before = await user_role_ids(services, "deputy")
    flash = await deputy.act(f"/admin/users/{me.id}/roles")
    assert flash.level == "error" and flash.text.startswith("此更改会移除你自己的管理权限：")
    assert await user_role_ids(services, "deputy") == before


async def test_a_user_admin_assigning_a_role_beyond_its_grants_is_refused_audited_and_unchanged(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    clerk = await new_user_holding(client, services, "clerk", "users.view", "users.assign")
    me = await user_named(services, "clerk")
    before = await user_role_ids(services, "clerk")
    admin_role = await role_id(services, "admin")
    flash = await clerk.act(
        f"/admin/users/{me.id}/roles",
        [("role_id", str(role)) for role in (*before, admin_role)],
        back="/admin/users",
    )
    assert flash == Flash(
        "error", f"你只能授予自己拥有的：不能给用户 {me.id} 分配或取消角色 {admin_role}"
    )
    assert await user_role_ids(services, "clerk") == before
    async with services.sessions() as session:
        refusals = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "admin_refused"))
        ).all()
    assert [(entry.actor, entry.detail) for entry in refusals] == [
        ("clerk", f"grant_ceiling: give or take roles [{admin_role}] of user {me.id}")
    ]
    assert (await clerk.get("/admin/roles")).status == 403
    assert (await clerk.post(f"/admin/users/{me.id}/status", {"is_active": "false"})).status == 403


async def test_revoking_a_users_sessions(
    admin: Browser, customer: Browser, services: Services
) -> None:
    user = await user_named(services, "customer")
    flash = await admin.act(f"/admin/users/{user.id}/revoke")
    assert flash == Flash("success", "已结束用户「customer」的 1 个会话")
    async with services.sessions() as session:
        assert list(await TokenRepository(session).list_live(user.id)) == []
    assert (await customer.get("/")).status == 200
    assert SESSION_COOKIE not in customer.cookies


async def test_a_foreign_back_address_is_ignored(admin: Browser, services: Services) -> None:
    user = await user_named(services, "agent")
    response = await admin.post(
        f"/admin/users/{user.id}/revoke", {"back": "https://evil.example/admin/users"}
    )
    assert response.status == 302
    assert response.headers["Location"] == "/admin/users"


# -- escaping --------------------------------------------------------------------------------


async def test_a_hostile_title_and_role_name_are_escaped_on_every_page(
    admin: Browser, services: Services
) -> None:
    flash = await admin.act("/admin/menus/create", {"title": HOSTILE, "url": "/x", "visible": "1"})
    assert flash == Flash("success", f"已创建菜单「{HOSTILE}」")
    flash = await admin.act("/admin/roles/create", {"name": HOSTILE, "description": HOSTILE})
    assert flash.level == "success"
    hostile_menu = await menu_id(services, HOSTILE)
    await admin.act(
        f"/admin/menus/{hostile_menu}/update",
        {"title": HOSTILE, "url": "/x", "note": '"><script>alert(2)</script>', "visible": "1"},
    )
    for path in [*ADMIN_PAGES, "/"]:
        page = (await admin.get(path)).text
        assert HOSTILE not in page, path
        assert "<script>alert" not in page, path
        assert ESCAPED in page, path
    editor = (await admin.get("/admin/menus")).text
    assert f'value="{ESCAPED}"' in editor
    assert "&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in editor
    assert f'data-confirm="删除菜单「{ESCAPED}」？"' in editor


async def test_an_error_flash_quoting_a_hostile_title_is_escaped(admin: Browser) -> None:
    await admin.act("/admin/menus/create", {"title": HOSTILE})
    response = await admin.post("/admin/menus/create", {"title": HOSTILE, "note": HOSTILE})
    assert response.status == 409
    assert HOSTILE not in response.text
    assert html.escape(f"这里已有标题为「{HOSTILE}」的菜单") in response.text


# -- the editor keeps what was typed, and shows each menu compactly -----------------------------

CREATE_FORM = re.compile(r'<form class="admin-form menu-create[^"]*".*?</form>', re.S)


def create_form(page: Response) -> str:
    """The create form's markup on ``page``."""
    match = CREATE_FORM.search(page.text)
    assert match is not None
    return match.group(0)


def node_markup(page: Response, menu: int) -> str:
    """The markup of one node of the tree, up to its children."""
    match = re.search(
        rf'<li class="menu-node[^"]*" data-menu-id="{menu}">.*?</details>', page.text, re.S
    )
    assert match is not None
    return match.group(0)


def selected(form: str, name: str) -> str | None:
    """The value of the selected option of the ``<select name=...>`` in ``form``."""
    select_tag = re.search(rf'<select name="{name}".*?</select>', form, re.S)
    assert select_tag is not None, name
    option = re.search(r'<option value="([^"]*)" selected>', select_tag.group(0))
    return None if option is None else html.unescape(option.group(1))


async def test_a_refused_create_shows_the_form_again_with_everything_typed(
    admin: Browser, services: Services
) -> None:
    parent = await menu_id(services, "系统管理")
    before = await all_menus(services)
    typed = {
        "title": "下载",  # free under 系统管理 (the demo's 下载 is a top-level menu)
        "url": "/downloads",  # but this url is the demo's 下载 menu's: refused
        "note": "每月的报表 <b>",
        "parent_id": str(parent),
        "permission": "audit.view",
        "audience": "members",
    }
    response = await admin.post("/admin/menus/create", typed)
    assert response.status == 409
    flash = flash_of(response)
    assert flash == Flash("error", "地址 /downloads 已属于另一个菜单")
    form = create_form(response)
    assert 'value="下载"' in form and 'value="/downloads"' in form
    assert 'value="每月的报表 &lt;b&gt;"' in form
    assert selected(form, "parent_id") == str(parent)
    assert selected(form, "permission") == "audit.view"
    assert selected(form, "audience") == "members"
    assert 'name="visible" value="1" checked' not in form, "the unchecked box stays unchecked"
    assert await all_menus(services) == before


async def test_a_create_with_invalid_fields_is_422_and_keeps_them(admin: Browser) -> None:
    response = await admin.post(
        "/admin/menus/create", {"title": "报表", "url": "http://elsewhere", "visible": "1"}
    )
    assert response.status == 422
    form = create_form(response)
    assert 'value="报表"' in form and 'value="http://elsewhere"' in form
    assert 'name="visible" value="1" checked' in form


async def test_a_refused_update_reopens_that_menus_form_with_what_was_typed(
    admin: Browser, services: Services
) -> None:
    target = await menu_id(services, "下载")
    other = await menu_id(services, "订单查询")
    response = await admin.post(
        f"/admin/menus/{target}/update",
        {"title": "首页", "url": "/downloads", "note": "新的备注", "audience": "visitors"},
    )
    assert response.status == 409
    node = node_markup(response, target)
    assert '<details class="node-more" open>' in node
    assert 'value="首页"' in node and 'value="新的备注"' in node
    assert selected(node, "audience") == "visitors"
    assert 'name="visible" value="1" checked' not in node
    assert '<details class="node-more">' in node_markup(response, other), "others stay closed"
    assert 'value="首页"' not in create_form(response)
    assert (await menu_named(services, "下载")) is not None


async def test_a_refusal_beyond_the_actors_grants_is_audited_when_the_form_is_shown_again(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    editor = await new_user_holding(client, services, "editor", "menus.view", "menus.change")
    before = await all_menus(services)
    response = await editor.post(
        "/admin/menus/create", {"title": "用户报表", "permission": "users.view"}
    )
    assert response.status == 403
    assert 'value="用户报表"' in create_form(response)
    assert selected(create_form(response), "permission") == "users.view"
    assert await all_menus(services) == before
    async with services.sessions() as session:
        refusals = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "admin_refused"))
        ).all()
    assert [entry.actor for entry in refusals] == ["editor"]


async def test_the_tree_shows_each_menu_compactly_with_the_roles_granting_it(
    admin: Browser, services: Services
) -> None:
    page = await admin.get("/admin/menus")
    lookup = node_markup(page, await menu_id(services, "订单查询"))
    row = re.search(r'<div class="node-row">.*?</div>', lookup, re.S)
    assert row is not None
    assert "订单查询" in row.group(0) and "/admin/orders" in row.group(0)
    assert '<span class="tag">admin</span>' in row.group(0)
    assert '<span class="tag">agent</span>' in row.group(0)
    assert '<span class="tag">customer</span>' not in row.group(0)
    assert 'name="title"' not in row.group(0), "editing is behind the button"
    assert '<details class="node-more">' in lookup and "<summary" in lookup
    login = node_markup(page, await menu_id(services, "登录"))
    assert "仅访客（未登录）" in login


async def test_the_audience_is_chosen_on_create_and_changed_on_update(
    admin: Browser, services: Services
) -> None:
    flash = await admin.act(
        "/admin/menus/create",
        {"title": "注册", "url": "/signup", "audience": "visitors", "visible": "1"},
    )
    assert flash.level == "success"
    created = await menu_named(services, "注册")
    assert created is not None and created.audience == "visitors"
    flash = await admin.act(
        f"/admin/menus/{created.id}/update",
        {"title": "注册", "url": "/signup", "audience": "all", "visible": "1"},
    )
    assert flash.level == "success"
    changed = await menu_named(services, "注册")
    assert changed is not None and changed.audience == "all"
    response = await admin.post(
        f"/admin/menus/{created.id}/update", {"title": "注册", "audience": "everyone"}
    )
    assert response.status == 422
    assert "audience：必须是以下之一：" in (flash_of(response) or Flash("", "")).text


# -- helpers ---------------------------------------------------------------------------------


def test_menu_options_flatten_the_tree_depth_first_with_ancestors() -> None:
    from repositories.menus import MenuNode

    def node(id: int, parent: int | None, *children: MenuNode) -> MenuNode:
        return MenuNode(id, f"m{id}", None, None, parent, 0, True, list(children))

    tree = [node(1, None, node(2, 1, node(3, 2)), node(4, 1)), node(5, None)]
    assert menu_options(tree) == [
        MenuOption(1, "m1", 0, frozenset()),
        MenuOption(2, "m2", 1, frozenset({1})),
        MenuOption(3, "m3", 2, frozenset({1, 2})),
        MenuOption(4, "m4", 1, frozenset({1})),
        MenuOption(5, "m5", 0, frozenset()),
    ]


def test_menu_options_survive_a_very_deep_tree() -> None:
    from repositories.menus import MenuNode

    root = MenuNode(1, "m1", None, None, None, 0, True)
    current = root
    for number in range(2, 3000):
        child = MenuNode(number, f"m{number}", None, None, current.id, 0, True)
        current.children.append(child)
        current = child
    options = menu_options([root])
    assert len(options) == 2999 and options[-1].depth == 2998


# -- languages ---------------------------------------------------------------------------------

CJK = re.compile(r"[\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]")
OTHER_LANGUAGE_SWITCH = re.compile(r'<button type="submit" lang="zh-CN"[^>]*>中文</button>')
"""The header's switch names Chinese in Chinese on an English page, by design."""


def chinese_in(page: Response) -> list[str]:
    """The Chinese characters an English page shows, besides the language switch."""
    return CJK.findall(OTHER_LANGUAGE_SWITCH.sub("", page.text))


def input_value(page: Response, pattern: str) -> str:
    """The ``value`` of the first ``<input>`` whose markup matches ``pattern``."""
    match = re.search(rf'<input [^>]*{pattern}[^>]*value="([^"]*)"', page.text)
    assert match is not None, pattern
    return html.unescape(match.group(1))


def role_description(page: Response, name: str) -> str:
    """The description field of role ``name`` on the roles page."""
    card = re.search(rf'data-role-name="{name}">.*?</section>', page.text, re.S)
    assert card is not None, name
    field = re.search(r'name="description" value="([^"]*)"', card.group(0))
    assert field is not None
    return html.unescape(field.group(1))


@pytest.mark.parametrize("path", [*ADMIN_PAGES, "/admin/audit"])
async def test_an_admin_page_in_english_has_no_chinese_and_in_chinese_by_default(
    admin: Browser, path: str
) -> None:
    chinese = await admin.get(path)
    assert chinese.status == 200
    assert '<html lang="zh-CN">' in chinese.text
    admin.headers["Accept-Language"] = "en-US,en;q=0.9"
    english = await admin.get(path)
    assert english.status == 200
    assert '<html lang="en-US">' in english.text
    assert chinese_in(english) == [], path


async def test_the_admin_pages_speak_english_when_asked(admin: Browser) -> None:
    admin.headers["Accept-Language"] = "en"
    menus = (await admin.get("/admin/menus")).text
    assert "<h1>Menus</h1>" in menus and "<h2>Menu tree</h2>" in menus
    assert "audit.view · read the audit log" in menus
    assert ">Visitors only (not logged in)</option>" in menus
    roles = (await admin.get("/admin/roles")).text
    assert "<legend>Permissions granted</legend>" in roles
    assert '<span class="muted">see every menu in the menu editor</span>' in roles
    users = (await admin.get("/admin/users")).text
    assert "3 users" in users and ">Deactivate</button>" in users
    assert (await admin.get("/admin/users?q=adm")).text.count("“adm”: 1 user<") == 1
    chinese = Browser(admin.client, dict(admin.cookies))
    assert "共 3 个用户" in (await chinese.get("/admin/users")).text


async def test_a_bad_audit_filter_is_named_in_the_readers_language(admin: Browser) -> None:
    page = await admin.get("/admin/audit?until=soon")
    assert page.status == 422
    assert "参数 <code>until</code> 无效：请给出 1000 年至 9999 年之间的" in page.text
    admin.read_english()
    page = await admin.get("/admin/audit?until=soon")
    assert "The parameter <code>until</code> is not valid: give an ISO 8601 date" in page.text


async def test_built_in_titles_and_descriptions_follow_the_reader_until_an_admin_retypes_them(
    admin: Browser, services: Services
) -> None:
    downloads = await menu_id(services, "下载")
    customer = await role_id(services, "customer")
    english = Browser(admin.client, dict(admin.cookies), {"Accept-Language": "en"})

    async def shown(browser: Browser) -> tuple[str, str, str]:
        menus = await browser.get("/admin/menus")
        node = node_markup(menus, downloads)
        title = re.search(r'<span class="node-title">([^<]*)</span>', node)
        assert title is not None
        roles = await browser.get("/admin/roles")
        return (
            html.unescape(title.group(1)),
            input_value(Response(200, menus.headers, node.encode()), 'name="title"'),
            role_description(roles, "customer"),
        )

    assert await shown(admin) == ("下载", "下载", "顾客：自己的订单和客服聊天")
    assert await shown(english) == (
        "Downloads",
        "Downloads",
        "Customer: their own orders and support chat",
    )

    # Sending the English form back as it was shown changes nothing: no translation is stored.
    flash = await english.act(
        f"/admin/menus/{downloads}/update",
        {"title": "Downloads", "url": "/downloads", "permission": "downloads.use", "visible": "1"},
    )
    assert flash == Flash("info", "The menu “Downloads” is unchanged")
    flash = await english.act(
        f"/admin/roles/{customer}/update",
        {"name": "customer", "description": "Customer: their own orders and support chat"},
    )
    assert flash == Flash("info", "The role “customer” is unchanged")
    assert await shown(admin) == ("下载", "下载", "顾客：自己的订单和客服聊天")

    # Retyped by an admin: shown as typed, in every language.
    flash = await english.act(
        f"/admin/menus/{downloads}/update",
        {"title": "Files", "url": "/downloads", "permission": "downloads.use", "visible": "1"},
    )
    assert flash == Flash("success", "Saved the menu “Files”")
    flash = await admin.act(
        f"/admin/roles/{customer}/update", {"name": "customer", "description": "买东西的人"}
    )
    assert flash == Flash("success", "已保存角色「customer」")
    assert await shown(admin) == ("Files", "Files", "买东西的人")
    assert await shown(english) == ("Files", "Files", "买东西的人")
    async with services.sessions() as session:
        menu = await MenuRepository(session).get(downloads)
        role = await RoleRepository(session).get(customer)
    assert (menu.title, menu.title_key, role.description_key) == ("Files", None, None)

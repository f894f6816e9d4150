"""The demo loader: roles with visibly different menus, one user per role, goods and an order,
loaded idempotently on SQLite and MariaDB."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from repositories.menus import MenuNode, MenuRepository
from repositories.models import Base, Menu
from repositories.orders import OrderRepository
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from server.demo import (
    CREDENTIALS_FILE,
    DEMO_ROLES,
    DemoResult,
    load_demo,
    remember_credentials,
)
from server.i18n import locale_for
from server.menu_access import ANONYMOUS_ROLE, MenuAccess, Principal, granted_tree
from server.permissions import PERMISSIONS
from server.security.passwords import PasswordHasher

DEMO_NAMES = ["admin", "agent", "customer"]
EVERY_MENU = {
    "首页",
    "登录",
    "我的订单",
    "客服中心",
    "聊天室",
    "客服在线",
    "订单查询",
    "下载",
    "系统管理",
    "菜单管理",
    "角色管理",
    "用户管理",
    "审计日志",
}


@pytest.fixture
async def passwords() -> AsyncIterator[PasswordHasher]:
    """A password hasher, closed after the test."""
    hasher = PasswordHasher(max_workers=1)
    try:
        yield hasher
    finally:
        hasher.close()


async def load(sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher) -> DemoResult:
    """Load the demo in one committed transaction, as ``mservices demo`` does."""
    async with sessions() as session, session.begin():
        return await load_demo(session, passwords)


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    """How many rows each table of the model holds."""
    async with engine.connect() as connection:
        return {
            table.name: int((await connection.scalar(select(func.count()).select_from(table))) or 0)
            for table in Base.metadata.sorted_tables
        }


def shape(nodes: Iterable[MenuNode]) -> list[tuple[str, str | None, list[object]]]:
    """A menu forest as nested ``(title, url, children)``, easy to compare."""
    return [(node.title, node.url, shape(node.children)) for node in nodes]


def titles(nodes: Iterable[MenuNode]) -> set[str]:
    """Every title in a menu forest, at any depth."""
    found: set[str] = set()
    for node in nodes:
        found.add(node.title)
        found |= titles(node.children)
    return found


async def principal(sessions: async_sessionmaker[AsyncSession], name: str) -> Principal:
    """The principal of the stored user called ``name``."""
    async with sessions() as session:
        users = UserRepository(session)
        user = await users.get_by_name(name)
        assert user is not None
        return Principal(
            user_id=user.id,
            name=user.name,
            is_superuser=user.is_superuser,
            role_ids=frozenset(await users.role_ids(user.id)),
        )


async def test_load_demo_creates_the_four_roles(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    async with sessions() as session:
        names = [role.name for role in await RoleRepository(session).list()]
    assert sorted(names) == sorted([ANONYMOUS_ROLE, "admin", "agent", "customer"])


async def test_load_demo_builds_the_menu_tree(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    async with sessions() as session:
        tree = await MenuRepository(session).get_tree()
    assert shape(tree) == [
        ("首页", "/", []),
        ("登录", "/login", []),
        ("我的订单", "/orders", []),
        ("客服中心", None, [("聊天室", "/chat", []), ("客服在线", "/robbit", [])]),
        ("订单查询", "/admin/orders", []),
        ("下载", "/downloads", []),
        (
            "系统管理",
            None,
            [
                ("菜单管理", "/admin/menus", []),
                ("角色管理", "/admin/roles", []),
                ("用户管理", "/admin/users", []),
                ("审计日志", "/admin/audit", []),
            ],
        ),
    ]


async def test_demo_titles_and_descriptions_carry_message_ids_whose_chinese_is_what_is_stored(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    """Pages show a built-in menu or role in the reader's language through its message id; in
    Chinese, the default, that reads exactly as the row stored (and as it read before)."""
    await load(sessions, passwords)
    chinese, english = locale_for("zh_CN"), locale_for("en_US")
    async with sessions() as session:
        menus = await MenuRepository(session).list()
        roles = await RoleRepository(session).list()
    assert {menu.title for menu in menus} == EVERY_MENU
    for menu in menus:
        assert menu.title_key is not None, menu.title
        assert chinese.translate(menu.title_key) == menu.title
        assert english.translate(menu.title_key) == menu.title_key
    assert {role.name: role.description_key for role in roles} == {
        name: label.msgid for name, (_description, label) in DEMO_ROLES.items()
    }
    for role in roles:
        assert role.description_key is not None
        assert chinese.translate(role.description_key) == role.description


async def test_load_demo_creates_one_user_per_role_and_only_admin_is_a_superuser(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    async with sessions() as session:
        users = UserRepository(session)
        assert await users.count() == 3
        for name in DEMO_NAMES:
            user = await users.get_by_name(name)
            assert user is not None
            assert user.is_active
            assert user.is_superuser is (name == "admin")
            assert [role.name for role in await users.roles(user.id)] == [name]


async def test_the_new_credentials_are_the_demo_users_passwords(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    result = await load(sessions, passwords)
    assert sorted(result.new_credentials) == DEMO_NAMES
    assert result.existing_users == []
    assert len(set(result.new_credentials.values())) == 3
    async with sessions() as session:
        users = UserRepository(session)
        for name, password in result.new_credentials.items():
            user = await users.get_by_name(name)
            assert user is not None
            assert password not in user.password_hash
            assert await passwords.verify(user.password_hash, password)


async def test_load_demo_adds_the_goods_and_one_order_for_the_customer(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    async with sessions() as session:
        orders = OrderRepository(session)
        goods = await orders.list_goods()
        assert sorted(item.name for item in goods) == sorted(
            ["Python高级开发", "Java高级开发", "Tornado异步编程"]
        )
        assert all(item.price > Decimal(0) for item in goods)
        users = UserRepository(session)
        customer = await users.get_by_name("customer")
        assert customer is not None
        placed = await orders.list_for_user(customer.id)
        assert len(placed) == 1
        assert placed[0].goods_id in {item.id for item in goods}
        for name in ("admin", "agent"):
            other = await users.get_by_name(name)
            assert other is not None
            assert list(await orders.list_for_user(other.id)) == []


async def test_each_role_sees_a_visibly_different_menu_tree(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    access = MenuAccess(sessions)
    seen = {
        ANONYMOUS_ROLE: titles(await access.tree_for(None)),
        **{
            name: titles(await access.tree_for(await principal(sessions, name)))
            for name in DEMO_NAMES
        },
    }
    assert seen[ANONYMOUS_ROLE] == {"首页", "登录"}
    assert seen["customer"] == {"首页", "我的订单", "客服中心", "聊天室", "客服在线"}
    assert seen["agent"] == {"首页", "客服中心", "聊天室", "客服在线", "订单查询"}
    assert seen["admin"] == EVERY_MENU - {"登录"}, "a superuser sees every menu but the visitors'"
    assert len({frozenset(menus) for menus in seen.values()}) == 4


async def test_the_login_menu_is_for_visitors_only_and_a_reload_marks_an_older_one(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    async with sessions() as session, session.begin():
        login = await session.scalar(select(Menu).where(Menu.url == "/login"))
        assert login is not None
        assert login.audience == "visitors"
        login.audience = "all"  # as loaded before menus had an audience
    await load(sessions, passwords)
    async with sessions() as session:
        assert await session.scalar(select(Menu.audience).where(Menu.url == "/login")) == (
            "visitors"
        )


async def test_the_admin_role_alone_grants_the_administration_menus(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    async with sessions() as session:
        admin = await RoleRepository(session).get_by_name("admin")
        assert admin is not None
        menus = await MenuRepository(session).list_nodes()
        granted = await RoleRepository(session).menu_ids(admin.id)
    tree = granted_tree(menus, granted)
    assert titles(tree) == {
        "首页",
        "订单查询",
        "下载",
        "系统管理",
        "菜单管理",
        "角色管理",
        "用户管理",
        "审计日志",
    }
    assert "登录" not in titles(tree)


async def test_each_demo_role_holds_the_permissions_of_what_it_does(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    """A customer chats and orders; an agent also looks up orders and answers support
    conversations; admin administers."""
    await load(sessions, passwords)
    access = MenuAccess(sessions)
    customer = await access.access_for(await principal(sessions, "customer"))
    agent = await access.access_for(await principal(sessions, "agent"))
    assert customer.permissions == {"chat.use", "orders.use"}
    assert agent.permissions == {"chat.use", "orders.use", "orders.lookup", "support.answer"}
    async with sessions() as session:
        admin = await RoleRepository(session).get_by_name("admin")
        assert admin is not None
        assert await RoleRepository(session).permissions(admin.id) == set(PERMISSIONS)
    assert not await access.permits(None, "chat.use"), "visitors hold no permission"


async def test_loading_twice_changes_no_counts_and_returns_no_new_credentials(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    await load(sessions, passwords)
    counts = await row_counts(engine)
    assert counts["orders"] == 1
    again = await load(sessions, passwords)
    assert again.new_credentials == {}
    assert again.existing_users == DEMO_NAMES
    assert await row_counts(engine) == counts


async def test_loading_over_an_existing_user_keeps_their_password_and_adds_their_role(
    sessions: async_sessionmaker[AsyncSession], passwords: PasswordHasher
) -> None:
    async with sessions() as session, session.begin():
        await UserRepository(session).add(
            name="agent", password_hash=await passwords.hash("agent's own password")
        )
    result = await load(sessions, passwords)
    assert sorted(result.new_credentials) == ["admin", "customer"]
    assert result.existing_users == ["agent"]
    async with sessions() as session:
        users = UserRepository(session)
        agent = await users.get_by_name("agent")
        assert agent is not None
        assert await passwords.verify(agent.password_hash, "agent's own password")
        assert [role.name for role in await users.roles(agent.id)] == ["agent"]


def test_remembered_credentials_are_appended_to_a_0600_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = remember_credentials(data_dir, {"admin": "first-secret"})
    assert path == data_dir / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    remember_credentials(data_dir, {"agent": "second-secret"})
    assert path.read_text(encoding="utf-8") == "admin first-secret\nagent second-secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

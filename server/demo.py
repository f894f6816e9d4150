"""Demo data: roles with visibly different menus and matching permissions, one user per role,
some goods and an order.

Loading is idempotent: existing rows are kept, missing ones are added. New users get random
passwords, printed once and kept in ``DATA_DIR/demo-credentials.txt`` (mode 0600).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.menus import MenuRepository
from repositories.models import Menu
from repositories.orders import OrderRepository
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from schemas.text import Text
from server.menu_access import ANONYMOUS_ROLE
from server.permissions import (
    AUDIT_VIEW,
    CHAT_USE,
    DOWNLOADS_USE,
    MENUS_VIEW,
    ORDERS_LOOKUP,
    ORDERS_USE,
    PERMISSIONS,
    ROLES_VIEW,
    SUPPORT_ANSWER,
    USERS_VIEW,
)
from server.security.passwords import PasswordHasher

CREDENTIALS_FILE = "demo-credentials.txt"


@dataclass(frozen=True, slots=True)
class DemoMenu:
    """A menu of the demo tree and the roles it is granted to."""

    title: str
    """The title stored (Chinese, the default language), kept when the catalogs are absent."""
    label: Text
    """The same title as a message id: stored as ``title_key`` and shown translated."""
    url: str | None
    roles: tuple[str, ...]
    children: tuple[DemoMenu, ...] = ()
    permission: str | None = None
    """The permission its page needs: the menu is shown only to holders."""
    audience: str = "all"
    """``visitors``: hidden once logged in (登录); ``members``: hidden from visitors."""


DEMO_ROLES = {
    ANONYMOUS_ROLE: ("访客（未登录）看到的菜单", Text("Menus visitors see before logging in")),
    "admin": ("管理员：菜单、角色、用户、审计日志", Text("Admin: menus, roles, users, audit log")),
    "agent": (
        "客服：与顾客聊天、查询订单",
        Text("Support agent: chats with customers, looks up orders"),
    ),
    "customer": ("顾客：自己的订单和客服聊天", Text("Customer: their own orders and support chat")),
}
"""Each demo role's description (stored, Chinese) and its message id (shown translated)."""

DEMO_PERMISSIONS: dict[str, frozenset[str]] = {
    ANONYMOUS_ROLE: frozenset(),
    "admin": frozenset(PERMISSIONS),
    "agent": frozenset({CHAT_USE, ORDERS_USE, ORDERS_LOOKUP, SUPPORT_ANSWER}),
    "customer": frozenset({CHAT_USE, ORDERS_USE}),
}
"""What each demo role may do: a customer chats and orders, an agent also looks up orders and
answers every customer's support conversation, the admin role administers (it holds every
permission)."""

DEMO_MENUS = (
    DemoMenu("首页", Text("Home"), "/", (ANONYMOUS_ROLE, "admin", "agent", "customer")),
    DemoMenu("登录", Text("Log in"), "/login", (ANONYMOUS_ROLE,), audience="visitors"),
    DemoMenu("我的订单", Text("My orders"), "/orders", ("customer",), permission=ORDERS_USE),
    DemoMenu(
        "客服中心",
        Text("Support"),
        None,
        ("agent", "customer"),
        (
            DemoMenu(
                "聊天室", Text("Chat room"), "/chat", ("agent", "customer"), permission=CHAT_USE
            ),
            DemoMenu(
                "客服在线",
                Text("Live support"),
                "/robbit",
                ("agent", "customer"),
                permission=CHAT_USE,
            ),
        ),
    ),
    DemoMenu(
        "订单查询",
        Text("Order lookup"),
        "/admin/orders",
        ("agent", "admin"),
        permission=ORDERS_LOOKUP,
    ),
    DemoMenu("下载", Text("Downloads"), "/downloads", ("admin",), permission=DOWNLOADS_USE),
    DemoMenu(
        "系统管理",
        Text("Administration"),
        None,
        ("admin",),
        (
            DemoMenu("菜单管理", Text("Menus"), "/admin/menus", ("admin",), permission=MENUS_VIEW),
            DemoMenu("角色管理", Text("Roles"), "/admin/roles", ("admin",), permission=ROLES_VIEW),
            DemoMenu("用户管理", Text("Users"), "/admin/users", ("admin",), permission=USERS_VIEW),
            DemoMenu(
                "审计日志", Text("Audit log"), "/admin/audit", ("admin",), permission=AUDIT_VIEW
            ),
        ),
    ),
)

DEMO_USERS = (("admin", "admin", True), ("agent", "agent", False), ("customer", "customer", False))

DEMO_GOODS = (
    ("Python高级开发", "cxk", Decimal("190.00")),
    ("Java高级开发", "ck", Decimal("290.00")),
    ("Tornado异步编程", "disen", Decimal("99.00")),
)


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What a demo load created: new users' passwords, and counts for the summary line."""

    new_credentials: dict[str, str]
    existing_users: list[str]


async def load_demo(session: AsyncSession, passwords: PasswordHasher) -> DemoResult:
    """Add whatever demo rows are missing; the caller commits."""
    roles = RoleRepository(session)
    role_ids: dict[str, int] = {}
    for name, (description, label) in DEMO_ROLES.items():
        role = await roles.get_by_name(name) or await roles.add(
            name=name, description=description, description_key=label.msgid
        )
        role_ids[name] = role.id

    menus = MenuRepository(session)
    existing = list(await menus.list())
    grants: dict[str, set[int]] = {
        name: await roles.menu_ids(role_id) for name, role_id in role_ids.items()
    }

    async def place(items: tuple[DemoMenu, ...], parent_id: int | None) -> None:
        for sort, item in enumerate(items):
            menu = _find(existing, item.title, parent_id)
            if menu is None:
                menu = await menus.add(
                    title=item.title,
                    url=item.url,
                    parent_id=parent_id,
                    sort=sort,
                    permission=item.permission,
                    audience=item.audience,
                    title_key=item.label.msgid,
                )
                existing.append(menu)
            else:
                missing: dict[str, str] = {}
                if menu.permission is None and item.permission is not None:
                    missing["permission"] = item.permission
                if menu.audience == "all" and item.audience != "all":
                    missing["audience"] = item.audience
                if missing:
                    menu = await menus.update(menu.id, missing)
            for role in item.roles:
                grants[role].add(menu.id)
            await place(item.children, menu.id)

    await place(DEMO_MENUS, None)
    for name, menu_ids in grants.items():
        await roles.set_menus(role_ids[name], menu_ids)
    for name, permissions in DEMO_PERMISSIONS.items():
        held = await roles.permissions(role_ids[name])
        await roles.set_permissions(role_ids[name], held | permissions)

    users = UserRepository(session)
    created: dict[str, str] = {}
    kept: list[str] = []
    for name, role_name, superuser in DEMO_USERS:
        user = await users.get_by_name(name)
        if user is None:
            password = secrets.token_urlsafe(12)
            user = await users.add(
                name=name, password_hash=await passwords.hash(password), is_superuser=superuser
            )
            created[name] = password
        else:
            kept.append(name)
        await users.set_roles(user.id, (await users.role_ids(user.id)) | {role_ids[role_name]})

    orders = OrderRepository(session)
    for title, author, price in DEMO_GOODS:
        if await orders.get_goods_by_name(title) is None:
            await orders.add_goods(name=title, author=author, price=price)
    # The customer always has an order to click on /orders (cancel, buy again, review).
    customer = await users.get_by_name("customer")
    if customer is not None and not await orders.count_for_user(customer.id):
        first_goods = (await orders.list_goods())[0]
        await orders.add(user_id=customer.id, goods_id=first_goods.id)
    return DemoResult(new_credentials=created, existing_users=kept)


def remember_credentials(data_dir: Path, credentials: dict[str, str]) -> Path:
    """Append new demo credentials to a 0600 file in the data directory; return its path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        for name, password in credentials.items():
            handle.write(f"{name} {password}\n")
    os.chmod(path, 0o600)
    return path


def _find(menus: list[Menu], title: str, parent_id: int | None) -> Menu | None:
    for menu in menus:
        if menu.title == title and menu.parent_id == parent_id:
            return menu
    return None

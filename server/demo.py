"""Demo data: roles with visibly different menus, one user per role, some goods and an order.

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
from server.menu_access import ANONYMOUS_ROLE
from server.security.passwords import PasswordHasher

CREDENTIALS_FILE = "demo-credentials.txt"


@dataclass(frozen=True, slots=True)
class DemoMenu:
    """A menu of the demo tree and the roles it is granted to."""

    title: str
    url: str | None
    roles: tuple[str, ...]
    children: tuple[DemoMenu, ...] = ()


DEMO_ROLES = {
    ANONYMOUS_ROLE: "What visitors who are not logged in see",
    "admin": "Administrators: menus, roles, users",
    "agent": "客服: chat with customers, look up orders",
    "customer": "Customers: their orders and the support chat",
}

DEMO_MENUS = (
    DemoMenu("首页", "/", (ANONYMOUS_ROLE, "admin", "agent", "customer")),
    DemoMenu("登录", "/login", (ANONYMOUS_ROLE,)),
    DemoMenu("我的订单", "/orders", ("customer",)),
    DemoMenu(
        "客服中心",
        None,
        ("agent", "customer"),
        (
            DemoMenu("聊天室", "/chat", ("agent", "customer")),
            DemoMenu("客服在线", "/robbit", ("agent", "customer")),
        ),
    ),
    DemoMenu("订单查询", "/admin/orders", ("agent", "admin")),
    DemoMenu("下载", "/downloads", ("admin",)),
    DemoMenu(
        "系统管理",
        None,
        ("admin",),
        (
            DemoMenu("菜单管理", "/admin/menus", ("admin",)),
            DemoMenu("角色管理", "/admin/roles", ("admin",)),
            DemoMenu("用户管理", "/admin/users", ("admin",)),
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
    for name, description in DEMO_ROLES.items():
        role = await roles.get_by_name(name) or await roles.add(name=name, description=description)
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
                    title=item.title, url=item.url, parent_id=parent_id, sort=sort
                )
                existing.append(menu)
            for role in item.roles:
                grants[role].add(menu.id)
            await place(item.children, menu.id)

    await place(DEMO_MENUS, None)
    for name, menu_ids in grants.items():
        await roles.set_menus(role_ids[name], menu_ids)

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

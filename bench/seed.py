"""Bench data: a menu tree, five roles granting parts of it, and a user holding all five; and the
accounts of the measurements that need a permission (chat fan-out: ``chat.use``; downloads:
``downloads.use``), each granted it through a role of its own, as an admin would.

``python -m bench.seed`` seeds the database the ``MSERVICES_*`` environment names (the harness
runs it after ``mservices demo``); ``seed_menus`` is also used by the tree-build measurement.
Seeding is idempotent: a database that already has the bench user keeps its menus, and the
granted accounts are only added where missing.
"""

import asyncio
import sys
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from bench.downloads import USER as DOWNLOADS_USER
from bench.fanout import USER as FANOUT_USER
from bench.scenarios import BENCH_PASSWORD
from repositories.db import create_engine, make_session_factory
from repositories.menus import MenuRepository
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from server.permissions import CHAT_USE, DOWNLOADS_USE
from server.security.passwords import PasswordHasher
from server.settings import Settings

MENU_USER = "bench-menus"
TREE_MENUS = 200
ROLES = 5
FAN_OUT = 6
GRANTED_USERS = {FANOUT_USER: (CHAT_USE,), DOWNLOADS_USER: (DOWNLOADS_USE,)}
"""Accounts the measurements log in as, and the permissions their requests need."""


@dataclass(frozen=True)
class SeededTree:
    """What ``seed_menus`` created."""

    menu_ids: list[int]
    role_ids: list[int]


async def seed_menus(
    session: AsyncSession, *, count: int, roles: int, prefix: str = "bench"
) -> SeededTree:
    """Create ``count`` menus (``FAN_OUT`` children per node, breadth first) and ``roles`` roles,
    role ``i`` granting every ``roles``-th menu starting at ``i``; the caller commits."""
    menus = MenuRepository(session)
    created: list[int] = []
    parents: list[int | None] = [None]
    while len(created) < count:
        next_parents: list[int | None] = []
        for parent in parents:
            for position in range(FAN_OUT):
                if len(created) >= count:
                    break
                number = len(created) + 1
                menu = await menus.add(
                    title=f"{prefix} menu {number}",
                    url=f"/{prefix}/{number}",
                    parent_id=parent,
                    sort=position,
                )
                created.append(menu.id)
                next_parents.append(menu.id)
        parents = next_parents
    role_repository = RoleRepository(session)
    role_ids = []
    for index in range(roles):
        role = await role_repository.add(name=f"{prefix}-role-{index + 1}")
        await role_repository.set_menus(role.id, created[index::roles])
        role_ids.append(role.id)
    return SeededTree(menu_ids=created, role_ids=role_ids)


async def seed_granted_users(session: AsyncSession, hasher: PasswordHasher) -> None:
    """Create each of ``GRANTED_USERS`` (unless it exists) with a role granting its permissions;
    the caller commits."""
    users, roles = UserRepository(session), RoleRepository(session)
    for name, permissions in GRANTED_USERS.items():
        role = await roles.get_by_name(name) or await roles.add(
            name=name, description="bench: " + ", ".join(permissions)
        )
        await roles.set_permissions(role.id, permissions)
        user = await users.get_by_name(name) or await users.add(
            name=name, password_hash=await hasher.hash(BENCH_PASSWORD)
        )
        await users.set_roles(user.id, await users.role_ids(user.id) | {role.id})


async def seed(settings: Settings) -> bool:
    """Seed the configured database; False when it already was."""
    engine = create_engine(settings.effective_database_url)
    hasher = PasswordHasher(max_workers=1)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            await seed_granted_users(session, hasher)  # idempotent: also on an older bench database
            users = UserRepository(session)
            if await users.get_by_name(MENU_USER) is not None:
                return False
            tree = await seed_menus(session, count=TREE_MENUS, roles=ROLES)
            user = await users.add(name=MENU_USER, password_hash=await hasher.hash(BENCH_PASSWORD))
            await users.set_roles(user.id, tree.role_ids)
        return True
    finally:
        hasher.close()
        await engine.dispose()


def main() -> int:
    """Seed the database of the current ``MSERVICES_*`` settings."""
    created = asyncio.run(seed(Settings()))
    print("bench data seeded" if created else "bench data already present", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

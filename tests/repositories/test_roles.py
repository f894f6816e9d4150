"""RoleRepository: CRUD, unique names, menu and permission grants, and deletes the database
cascades."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.errors import Conflict, NotFound
from repositories.menus import MenuRepository
from repositories.models import role_menu, role_permission, user_role
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from schemas.text import Text
from tests.repositories.conftest import NO_SUCH_ID


async def test_an_added_role_reads_back_by_id_and_by_name(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    added = await RoleRepository(session).add(name="seller", description="sells goods")
    await session.commit()

    async with sessions() as fresh:
        roles = RoleRepository(fresh)
        by_id = await roles.get(added.id)
        by_name = await roles.get_by_name("seller")
    assert by_name is not None
    assert by_name.id == by_id.id == added.id
    assert (by_id.name, by_id.description) == ("seller", "sells goods")


async def test_roles_are_listed_by_name(session: AsyncSession) -> None:
    roles = RoleRepository(session)
    for name in ("seller", "auditor", "buyer"):
        await roles.add(name=name)

    assert [role.name for role in await roles.list()] == ["auditor", "buyer", "seller"]


async def test_get_by_name_of_an_unknown_name_is_none(session: AsyncSession) -> None:
    roles = RoleRepository(session)
    await roles.add(name="seller")

    assert await roles.get_by_name("sell") is None


async def test_a_role_can_be_renamed_and_described(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    roles = RoleRepository(session)
    seller = await roles.add(name="seller")
    buyer = await roles.add(name="buyer", description="buys")

    await roles.update(seller.id, {"name": "vendor", "description": "sells"})
    await roles.update(buyer.id, {"name": "buyer", "description": None})
    await session.commit()

    async with sessions() as fresh:
        listed = [(role.name, role.description) for role in await RoleRepository(fresh).list()]
    assert listed == [("buyer", None), ("vendor", "sells")]


async def test_a_taken_role_name_is_refused(session: AsyncSession) -> None:
    roles = RoleRepository(session)
    await roles.add(name="seller")

    with pytest.raises(Conflict) as refused:
        await roles.add(name="seller", description="again")

    assert refused.value.code == "role_name_taken"
    assert refused.value.message == Text("a role named '{name}' exists", name="seller")
    assert len(await roles.list()) == 1


async def test_renaming_a_role_to_a_taken_name_is_refused(session: AsyncSession) -> None:
    roles = RoleRepository(session)
    await roles.add(name="seller")
    buyer = await roles.add(name="buyer")

    with pytest.raises(Conflict) as refused:
        await roles.update(buyer.id, {"name": "seller"})

    assert refused.value.code == "role_name_taken"
    assert refused.value.message == Text("a role named '{name}' exists", name="seller")
    assert (await roles.get(buyer.id)).name == "buyer"


async def test_updating_a_field_that_is_not_a_role_field_is_refused(session: AsyncSession) -> None:
    roles = RoleRepository(session)
    seller = await roles.add(name="seller")

    with pytest.raises(ValueError, match="id"):
        await roles.update(seller.id, {"description": "x", "id": NO_SUCH_ID})

    assert (await roles.get(seller.id)).description is None


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda roles: roles.get(NO_SUCH_ID), id="get"),
        pytest.param(lambda roles: roles.update(NO_SUCH_ID, {"description": "x"}), id="update"),
        pytest.param(lambda roles: roles.delete(NO_SUCH_ID), id="delete"),
        pytest.param(lambda roles: roles.set_menus(NO_SUCH_ID, []), id="set_menus"),
        pytest.param(
            lambda roles: roles.set_permissions(NO_SUCH_ID, ["chat.use"]), id="set_permissions"
        ),
    ],
)
async def test_an_unknown_role_is_not_found(session: AsyncSession, call: Any) -> None:
    roles = RoleRepository(session)
    await roles.add(name="seller")

    with pytest.raises(NotFound) as missing:
        await call(roles)

    assert missing.value.code == "role_not_found"
    assert missing.value.message == Text("role {id} does not exist", id=NO_SUCH_ID)
    assert len(await roles.list()) == 1


async def test_set_menus_replaces_the_grants_of_a_role(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    roles = RoleRepository(session)
    menus = MenuRepository(session)
    shop, admin, users = [await menus.add(title=title) for title in ("Shop", "Admin", "Users")]
    seller = await roles.add(name="seller")
    auditor = await roles.add(name="auditor")
    await roles.set_menus(auditor.id, [admin.id])

    assert await roles.set_menus(seller.id, [shop.id, admin.id]) == {shop.id, admin.id}
    assert await roles.set_menus(seller.id, [admin.id, users.id, users.id]) == {admin.id, users.id}
    await session.commit()

    async with sessions() as fresh:
        assert await RoleRepository(fresh).menu_ids(seller.id) == {admin.id, users.id}
        assert await RoleRepository(fresh).menu_ids(auditor.id) == {admin.id}
    await roles.set_menus(seller.id, [])
    assert await roles.menu_ids(seller.id) == set()
    assert await roles.menu_ids(auditor.id) == {admin.id}


async def test_set_menus_with_an_unknown_menu_changes_nothing(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    roles = RoleRepository(session)
    shop = await MenuRepository(session).add(title="Shop")
    admin = await MenuRepository(session).add(title="Admin")
    seller = await roles.add(name="seller")
    await roles.set_menus(seller.id, [shop.id])
    await session.commit()

    with pytest.raises(NotFound) as missing:
        await roles.set_menus(seller.id, [admin.id, NO_SUCH_ID])
    await session.commit()

    assert missing.value.code == "menu_not_found"
    assert missing.value.message == Text("menus do not exist: {ids}", ids=str(NO_SUCH_ID))
    async with sessions() as fresh:
        assert await RoleRepository(fresh).menu_ids(seller.id) == {shop.id}


async def count_rows_of_role(session: AsyncSession, role_id: int) -> tuple[int, int]:
    """How many (user_role, role_menu) rows name this role."""
    members = await session.scalar(
        select(func.count()).select_from(user_role).where(user_role.c.role_id == role_id)
    )
    grants = await session.scalar(
        select(func.count()).select_from(role_menu).where(role_menu.c.role_id == role_id)
    )
    return int(members or 0), int(grants or 0)


async def test_deleting_a_role_removes_its_memberships_and_grants_through_foreign_keys(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    roles = RoleRepository(session)
    users = UserRepository(session)
    shop = await MenuRepository(session).add(title="Shop")
    admin = await MenuRepository(session).add(title="Admin")
    seller = await roles.add(name="seller")
    auditor = await roles.add(name="auditor")
    alice = await users.add(name="alice", password_hash="h")
    bob = await users.add(name="bob", password_hash="h")
    await users.set_roles(alice.id, [seller.id, auditor.id])
    await users.set_roles(bob.id, [seller.id])
    await roles.set_menus(seller.id, [shop.id, admin.id])
    await roles.set_menus(auditor.id, [admin.id])
    await session.commit()
    assert await count_rows_of_role(session, seller.id) == (2, 2)

    # The role has no ORM relationships: only ON DELETE CASCADE can remove these rows.
    await roles.delete(seller.id)
    await session.commit()

    async with sessions() as fresh:
        assert await count_rows_of_role(fresh, seller.id) == (0, 0)
        assert await count_rows_of_role(fresh, auditor.id) == (1, 1)
        assert [role.name for role in await RoleRepository(fresh).list()] == ["auditor"]
        assert await UserRepository(fresh).role_ids(alice.id) == {auditor.id}
        assert await MenuRepository(fresh).count() == 2


@pytest.mark.parametrize("table", ["user_role", "role_menu"])
async def test_the_database_refuses_a_membership_or_grant_of_a_missing_row(
    session: AsyncSession, table: str
) -> None:
    seller = await RoleRepository(session).add(name="seller")
    await session.commit()
    if table == "user_role":
        statement = insert(user_role).values(user_id=NO_SUCH_ID, role_id=seller.id)
    else:
        statement = insert(role_menu).values(role_id=seller.id, menu_id=NO_SUCH_ID)

    with pytest.raises(IntegrityError):
        await session.execute(statement)


async def test_the_grants_of_many_roles_are_read_in_one_call(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    roles = RoleRepository(session)
    home = await menus.add(title="Home")
    docs = await menus.add(title="Docs")
    reader = await roles.add(name="reader")
    writer = await roles.add(name="writer")
    idle = await roles.add(name="idle")
    await roles.set_menus(reader.id, {home.id})
    await roles.set_menus(writer.id, {home.id, docs.id})
    grants = await roles.menu_ids_by_role([reader.id, writer.id, idle.id])
    assert grants == {reader.id: {home.id}, writer.id: {home.id, docs.id}}
    assert await roles.menu_ids_by_role([]) == {}


async def test_set_permissions_replaces_the_permissions_a_role_grants(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    roles = RoleRepository(session)
    seller = await roles.add(name="seller")
    auditor = await roles.add(name="auditor")
    await roles.set_permissions(auditor.id, ["audit.view"])

    assert await roles.set_permissions(seller.id, ["chat.use", "orders.use"]) == {
        "chat.use",
        "orders.use",
    }
    assert await roles.set_permissions(
        seller.id, ["orders.use", "downloads.use", "orders.use"]
    ) == {
        "orders.use",
        "downloads.use",
    }
    await session.commit()

    async with sessions() as fresh:
        assert await RoleRepository(fresh).permissions(seller.id) == {"orders.use", "downloads.use"}
        assert await RoleRepository(fresh).permissions(auditor.id) == {"audit.view"}
    assert await roles.set_permissions(seller.id, []) == set()
    assert await roles.permissions(seller.id) == set()
    assert await roles.permissions(auditor.id) == {"audit.view"}


async def test_the_permissions_of_many_roles_are_read_in_one_call(session: AsyncSession) -> None:
    roles = RoleRepository(session)
    agent = await roles.add(name="agent")
    customer = await roles.add(name="customer")
    idle = await roles.add(name="idle")
    await roles.set_permissions(agent.id, ["chat.use", "orders.lookup"])
    await roles.set_permissions(customer.id, ["chat.use", "orders.use"])

    by_role = await roles.permissions_by_role([agent.id, customer.id, idle.id, NO_SUCH_ID])

    assert by_role == {
        agent.id: {"chat.use", "orders.lookup"},
        customer.id: {"chat.use", "orders.use"},
    }
    assert await roles.permissions_by_role([]) == {}
    assert await roles.permissions_granted_to_roles([agent.id, customer.id]) == {
        "chat.use",
        "orders.lookup",
        "orders.use",
    }
    assert await roles.permissions_granted_to_roles([idle.id]) == set()
    assert await roles.permissions_granted_to_roles([]) == set()


async def test_deleting_a_role_removes_its_permission_grants_through_foreign_keys(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    roles = RoleRepository(session)
    agent = await roles.add(name="agent")
    customer = await roles.add(name="customer")
    await roles.set_permissions(agent.id, ["chat.use", "orders.lookup"])
    await roles.set_permissions(customer.id, ["chat.use"])
    await session.commit()

    await roles.delete(agent.id)
    await session.commit()

    async with sessions() as fresh:
        rows = await fresh.execute(select(role_permission.c.role_id, role_permission.c.permission))
        assert {(role_id, code) for role_id, code in rows} == {(customer.id, "chat.use")}

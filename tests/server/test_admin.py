"""The administration rules (``server.admin.Admin``) on both backends, tried as an attacker would.

Every change is audited and invalidates the right caches; nobody removes their own administration
permissions; the last superuser stays. Nobody grants what they do not hold (the grant ceiling),
overrules a superuser or a user who outranks them, and every refusal is a 403 with its own code,
audited after the rollback. Racing requests (separate sessions started together, each committing)
never make a menu cycle, never leave no superuser, never duplicate a title under one parent; and
menus nest at most ``MAX_DEPTH`` deep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.audit import AuditRepository
from repositories.errors import Conflict, DomainError, NotFound, Unprocessable
from repositories.menus import MAX_DEPTH, MenuRepository
from repositories.models import AppLock, Menu, Role, User, utcnow
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.text import Text
from server.admin import REFUSED_ACTION, Admin, Refused
from server.invalidation import Event
from server.permissions import (
    ADMIN_PERMISSIONS,
    AUDIT_VIEW,
    CHAT_USE,
    MENUS_CHANGE,
    MENUS_VIEW,
    PERMISSIONS,
    ROLES_CHANGE,
    ROLES_VIEW,
    SESSIONS_REVOKE,
    USERS_ASSIGN,
    USERS_CHANGE,
    USERS_VIEW,
)
from server.principal import Principal
from tests.grants import grant_in_session

CLIENT_IP = "192.0.2.7"
NO_SUCH_ID = 2**31 - 1
ROUNDS = 20
"""How many times each race is run."""


def principal(user: User) -> Principal:
    """The principal of ``user`` (Admin reads roles and status from the database itself)."""
    return Principal(
        user_id=user.id, name=user.name, is_superuser=user.is_superuser, role_ids=frozenset()
    )


def admin_for(session: AsyncSession, actor: User | Principal) -> Admin:
    """``actor``'s Admin (pass a Principal once the session may have expired the User)."""
    who = actor if isinstance(actor, Principal) else principal(actor)
    return Admin(session, who, client_ip=CLIENT_IP)


async def add_user(session: AsyncSession, name: str, *, superuser: bool = False) -> User:
    return await UserRepository(session).add(
        name=name, password_hash="not-a-real-hash", is_superuser=superuser
    )


async def add_role(
    session: AsyncSession,
    name: str,
    *,
    permissions: Iterable[str] = (),
    menus: Iterable[Menu] = (),
    holders: Iterable[User] = (),
) -> Role:
    """A role granting ``permissions`` and ``menus``, held by ``holders``."""
    roles = RoleRepository(session)
    role = await roles.add(name=name)
    await roles.set_permissions(role.id, permissions)
    await roles.set_menus(role.id, [menu.id for menu in menus])
    for user in holders:
        users = UserRepository(session)
        await users.set_roles(user.id, {*await users.role_ids(user.id), role.id})
    return role


async def add_token(session: AsyncSession, user: User, token_hash: str) -> None:
    await TokenRepository(session).add(
        user_id=user.id,
        token_hash=token_hash,
        device="test",
        expires_at=utcnow() + dt.timedelta(days=1),
    )


async def audit_actions(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """The committed audit actions, oldest first."""
    async with sessions() as session:
        return [entry.action for entry in reversed(await AuditRepository(session).list())]


async def refusal(session: AsyncSession, attempt: Awaitable[object], code: str) -> Refused:
    """Await ``attempt``, which must be refused as 403 ``code``; roll its changes back, as the
    handlers do."""
    with pytest.raises(Refused) as refused:
        await attempt
    await session.rollback()
    assert (refused.value.code, refused.value.status) == (code, 403), refused.value.message
    return refused.value


# -- menus ---------------------------------------------------------------------------------


async def test_creating_a_menu_is_audited_and_invalidates_the_menu_caches(
    session: AsyncSession,
) -> None:
    root = await add_user(session, "root", superuser=True)
    admin = admin_for(session, root)
    menu = await admin.create_menu({"title": "Reports", "url": "/reports"})
    assert admin.events == [Event("menus")]
    [entry] = await AuditRepository(session).list()
    assert (entry.action, entry.user_id, entry.actor, entry.client_ip) == (
        "menu_created",
        root.id,
        "root",
        CLIENT_IP,
    )
    assert str(menu.id) in (entry.detail or "")


async def test_a_menu_cannot_move_under_itself_or_its_descendant(session: AsyncSession) -> None:
    root = await add_user(session, "root", superuser=True)
    admin = admin_for(session, root)
    parent = await admin.create_menu({"title": "Parent"})
    child = await admin.create_menu({"title": "Child", "parent_id": parent.id})
    for new_parent in (parent.id, child.id):
        with pytest.raises(Conflict) as refused:
            await admin.update_menu(parent.id, {"parent_id": new_parent})
        assert refused.value.code == "menu_cycle"
    moved = await admin.update_menu(child.id, {"parent_id": None})
    assert moved.parent_id is None


async def test_deleting_a_menu_with_children_needs_cascade_which_takes_the_grants(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    actor = principal(await add_user(session, "root", superuser=True))
    admin = admin_for(session, actor)
    parent = await admin.create_menu({"title": "Parent", "url": "/parent"})
    child = await admin.create_menu({"title": "Child", "url": "/child", "parent_id": parent.id})
    kept = await admin.create_menu({"title": "Kept", "url": "/kept"})
    role = await add_role(session, "viewer", menus=[parent, child, kept])
    parent_id, child_id, kept_id, role_id = parent.id, child.id, kept.id, role.id
    await session.commit()

    with pytest.raises(Conflict) as refused:
        await admin_for(session, actor).delete_menu(parent_id, cascade=False)
    assert refused.value.code == "menu_has_children"
    await session.rollback()

    admin = admin_for(session, actor)
    deleted = await admin.delete_menu(parent_id, cascade=True)
    await session.commit()
    assert sorted(deleted) == sorted([parent_id, child_id])
    assert admin.events == [Event("menus")]
    async with sessions() as fresh:
        assert await RoleRepository(fresh).menu_ids(role_id) == {kept_id}
        assert [menu.id for menu in await MenuRepository(fresh).list()] == [kept_id]


# -- menu depth ----------------------------------------------------------------------------


async def add_chain(admin: Admin, length: int, *, prefix: str = "level") -> list[Menu]:
    """A root and ``length - 1`` descendants, each under the one before it."""
    chain: list[Menu] = []
    for level in range(1, length + 1):
        parent_id = chain[-1].id if chain else None
        chain.append(
            await admin.create_menu({"title": f"{prefix} {level}", "parent_id": parent_id})
        )
    return chain


async def test_a_menu_may_be_created_exactly_max_depth_deep_but_not_deeper(
    session: AsyncSession,
) -> None:
    admin = admin_for(session, await add_user(session, "root", superuser=True))
    chain = await add_chain(admin, MAX_DEPTH)

    with pytest.raises(Unprocessable) as refused:
        await admin.create_menu({"title": "too deep", "parent_id": chain[-1].id})

    assert (refused.value.code, refused.value.status) == ("menu_too_deep", 422)
    assert await MenuRepository(session).count() == MAX_DEPTH


async def test_moving_a_menu_or_a_subtree_past_max_depth_is_unprocessable(
    session: AsyncSession,
) -> None:
    admin = admin_for(session, await add_user(session, "root", superuser=True))
    chain = await add_chain(admin, MAX_DEPTH)
    leaf = await admin.create_menu({"title": "Leaf"})
    top, bottom = await add_chain(admin, 2, prefix="subtree")

    for menu, parent in ((leaf, chain[-1]), (top, chain[-2])):
        with pytest.raises(Unprocessable) as refused:
            await admin.update_menu(menu.id, {"parent_id": parent.id})
        assert (refused.value.code, refused.value.status) == ("menu_too_deep", 422)
    assert (leaf.parent_id, top.parent_id) == (None, None)

    # Exactly MAX_DEPTH deep is allowed: the leaf at 32, and the subtree's bottom at 32.
    assert (await admin.update_menu(leaf.id, {"parent_id": chain[-2].id})).parent_id == chain[-2].id
    assert (await admin.update_menu(top.id, {"parent_id": chain[-3].id})).parent_id == chain[-3].id
    assert bottom.parent_id == top.id


# -- own admin access ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleAdmin:
    """ "alice", holding every administration permission only through the role "admins", which
    also grants the menus of the admin pages; a superuser "root" exists (all committed)."""

    alice: Principal
    role_id: int
    menu_ids: dict[str, int]
    """The admin page menus, by url."""


ADMIN_PAGES = {
    "/admin/users": USERS_VIEW,
    "/admin/roles": ROLES_VIEW,
    "/admin/menus": MENUS_VIEW,
    "/admin/audit": AUDIT_VIEW,
}


@pytest.fixture
async def role_admin(session: AsyncSession) -> RoleAdmin:
    await add_user(session, "root", superuser=True)
    alice = await add_user(session, "alice")
    menus = MenuRepository(session)
    top = await menus.add(title="Admin")
    pages = {
        url: await menus.add(
            title=url.rsplit("/", 1)[-1], url=url, parent_id=top.id, permission=permission
        )
        for url, permission in ADMIN_PAGES.items()
    }
    role = await add_role(
        session,
        "admins",
        permissions=ADMIN_PERMISSIONS,
        menus=[top, *pages.values()],
        holders=[alice],
    )
    await session.commit()
    return RoleAdmin(principal(alice), role.id, {url: menu.id for url, menu in pages.items()})


async def test_an_admin_cannot_remove_their_own_admin_role(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], role_admin: RoleAdmin
) -> None:
    alice = role_admin.alice
    with pytest.raises(Conflict) as refused:
        await admin_for(session, alice).set_user_roles(alice.user_id, [])
    assert refused.value.code == "own_admin_access"
    assert USERS_ASSIGN in str(refused.value.message)
    await session.rollback()  # the caller's job: the refused change was flushed, never committed
    async with sessions() as fresh:
        assert await UserRepository(fresh).role_ids(alice.user_id) == {role_admin.role_id}


async def test_an_admin_cannot_take_an_admin_permission_from_their_own_role(
    session: AsyncSession, role_admin: RoleAdmin
) -> None:
    others = ADMIN_PERMISSIONS - {ROLES_CHANGE}
    with pytest.raises(Conflict) as refused:
        await admin_for(session, role_admin.alice).set_role_permissions(role_admin.role_id, others)
    assert refused.value.code == "own_admin_access"
    assert ROLES_CHANGE in str(refused.value.message)


async def test_an_admin_cannot_delete_their_own_admin_role(
    session: AsyncSession, role_admin: RoleAdmin
) -> None:
    with pytest.raises(Conflict) as refused:
        await admin_for(session, role_admin.alice).delete_role(role_admin.role_id)
    assert refused.value.code == "own_admin_access"


async def test_an_admin_cannot_deactivate_themselves(
    session: AsyncSession, role_admin: RoleAdmin
) -> None:
    alice = role_admin.alice
    with pytest.raises(Conflict) as refused:
        await admin_for(session, alice).update_user(alice.user_id, {"is_active": False})
    assert refused.value.code == "own_admin_access"


async def test_menus_decide_no_access_so_an_admin_may_re_url_hide_or_delete_admin_page_menus(
    session: AsyncSession, role_admin: RoleAdmin
) -> None:
    admin = admin_for(session, role_admin.alice)
    menus_page, users_page = (
        role_admin.menu_ids["/admin/menus"],
        role_admin.menu_ids["/admin/users"],
    )

    changed = await admin.update_menu(
        menus_page, {"url": "/admin/menus-old", "title": "Menu tree", "visible": False}
    )
    assert (changed.url, changed.title, changed.visible) == ("/admin/menus-old", "Menu tree", False)
    assert await admin.delete_menu(users_page, cascade=False) == [users_page]
    assert await admin.admin_permissions() == set(ADMIN_PERMISSIONS)


async def test_a_superuser_without_an_admin_role_cannot_demote_themselves(
    session: AsyncSession,
) -> None:
    root = await add_user(session, "root", superuser=True)
    await add_user(session, "other-root", superuser=True)
    with pytest.raises(Conflict) as refused:
        await admin_for(session, root).update_user(root.id, {"is_superuser": False})
    assert refused.value.code == "own_admin_access"


async def test_a_superuser_with_an_admin_role_may_demote_themselves_to_what_the_role_grants(
    session: AsyncSession,
) -> None:
    root = await add_user(session, "root", superuser=True)
    await add_user(session, "other-root", superuser=True)
    await add_role(session, "admins", permissions=ADMIN_PERMISSIONS, holders=[root])
    admin = admin_for(session, root)
    user = await admin.update_user(root.id, {"is_superuser": False})
    assert user.is_superuser is False
    assert await admin.admin_permissions() == set(ADMIN_PERMISSIONS)


async def test_removing_another_admins_access_is_allowed(
    session: AsyncSession, role_admin: RoleAdmin
) -> None:
    bob = await add_user(session, "bob")
    await UserRepository(session).set_roles(bob.id, [role_admin.role_id])
    admin = admin_for(session, role_admin.alice)
    assert await admin.set_user_roles(bob.id, []) == set()
    assert admin.events == [Event("user", str(bob.id))]


async def test_an_admin_keeps_access_granted_by_a_second_role(
    session: AsyncSession, role_admin: RoleAdmin
) -> None:
    alice = role_admin.alice
    roles = RoleRepository(session)
    backup = await roles.add(name="backup")
    await roles.set_permissions(backup.id, ADMIN_PERMISSIONS)
    await roles.set_menus(backup.id, await roles.menu_ids(role_admin.role_id))
    await UserRepository(session).set_roles(alice.user_id, [role_admin.role_id, backup.id])
    admin = admin_for(session, alice)
    assert await admin.set_user_roles(alice.user_id, [backup.id]) == {backup.id}
    await admin.delete_role(role_admin.role_id)
    assert await admin.admin_permissions() == set(ADMIN_PERMISSIONS)


async def test_admin_permissions_follow_status_and_the_roles_held(session: AsyncSession) -> None:
    root = await add_user(session, "root", superuser=True)
    carol = await add_user(session, "carol")
    assert await admin_for(session, root).admin_permissions() == set(ADMIN_PERMISSIONS)
    assert await admin_for(session, carol).admin_permissions() == set()
    await add_role(session, "user-viewers", permissions=[USERS_VIEW, CHAT_USE], holders=[carol])
    assert await admin_for(session, carol).admin_permissions() == {USERS_VIEW}
    carol.is_active = False
    assert await admin_for(session, carol).admin_permissions() == set()


# -- users -----------------------------------------------------------------------------------


async def test_the_last_active_superuser_cannot_be_demoted_or_deactivated(
    session: AsyncSession, role_admin: RoleAdmin
) -> None:
    root = await UserRepository(session).get_by_name("root")
    assert root is not None
    for change in ({"is_superuser": False}, {"is_active": False}):
        with pytest.raises(Conflict) as refused:
            await admin_for(session, root).update_user(root.id, change)
        assert refused.value.code == "last_superuser"


async def test_deactivating_a_user_revokes_their_tokens_and_evicts_them(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    root = await add_user(session, "root", superuser=True)
    dave = await add_user(session, "dave")
    await add_token(session, dave, "a" * 64)
    await add_token(session, dave, "b" * 64)
    await add_token(session, root, "c" * 64)
    admin = admin_for(session, root)
    user = await admin.update_user(dave.id, {"is_active": False})
    await session.commit()
    assert user.is_active is False
    assert admin.events[0] == Event("user", str(dave.id))
    assert sorted(admin.events[1:], key=lambda event: event.key) == [
        Event("token", "a" * 64),
        Event("token", "b" * 64),
    ]
    async with sessions() as fresh:
        assert await TokenRepository(fresh).list_live(dave.id) == []
        assert len(await TokenRepository(fresh).list_live(root.id)) == 1
    assert await audit_actions(sessions) == ["user_updated"]


async def test_reactivating_a_user_revokes_nothing(session: AsyncSession) -> None:
    root = await add_user(session, "root", superuser=True)
    dave = await add_user(session, "dave")
    await add_token(session, dave, "a" * 64)
    admin = admin_for(session, root)
    await admin.update_user(dave.id, {"is_active": True})
    assert admin.events == [Event("user", str(dave.id))]
    assert len(await TokenRepository(session).list_live(dave.id)) == 1


async def test_revoking_a_users_sessions_counts_them_and_evicts_each(
    session: AsyncSession,
) -> None:
    root = await add_user(session, "root", superuser=True)
    dave = await add_user(session, "dave")
    await add_token(session, dave, "a" * 64)
    admin = admin_for(session, root)
    assert await admin.revoke_user_sessions(dave.id) == 1
    assert admin.events == [Event("token", "a" * 64)]
    assert await admin.revoke_user_sessions(dave.id) == 0


# -- roles, events and the audit trail ---------------------------------------------------------


async def test_each_role_change_announces_what_it_makes_stale(session: AsyncSession) -> None:
    root = await add_user(session, "root", superuser=True)
    admin = admin_for(session, root)
    menu = await admin.create_menu({"title": "Reports", "url": "/reports"})
    admin.events.clear()

    role = await admin.create_role("viewer", None)
    assert admin.events == [], "a new role grants nothing, so nothing is stale"
    await admin.update_role(role.id, {"description": "reads reports"})
    assert admin.events == [Event("roles")]
    admin.events.clear()
    assert await admin.set_role_menus(role.id, [menu.id]) == {menu.id}
    assert admin.events == [Event("menus")]
    admin.events.clear()
    assert await admin.set_role_permissions(role.id, [CHAT_USE]) == {CHAT_USE}
    assert admin.events == [Event("roles")]
    admin.events.clear()
    assert await admin.set_user_roles(root.id, [role.id]) == {role.id}
    assert admin.events == [Event("user", str(root.id))]
    admin.events.clear()
    await admin.delete_role(role.id)
    assert admin.events == [Event("roles")]
    assert await UserRepository(session).role_ids(root.id) == set()


async def test_unknown_ids_are_not_found(session: AsyncSession) -> None:
    root = await add_user(session, "root", superuser=True)
    admin = admin_for(session, root)
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: admin.update_menu(NO_SUCH_ID, {"title": "x"}),
        lambda: admin.delete_menu(NO_SUCH_ID, cascade=True),
        lambda: admin.update_role(NO_SUCH_ID, {"name": "x"}),
        lambda: admin.delete_role(NO_SUCH_ID),
        lambda: admin.set_role_menus(NO_SUCH_ID, []),
        lambda: admin.set_role_permissions(NO_SUCH_ID, []),
        lambda: admin.update_user(NO_SUCH_ID, {"is_active": True}),
        lambda: admin.set_user_roles(NO_SUCH_ID, []),
        lambda: admin.set_user_roles(root.id, [NO_SUCH_ID]),
        lambda: admin.revoke_user_sessions(NO_SUCH_ID),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            await attempt()
    assert await AuditRepository(session).list() == []


async def test_every_change_is_audited_with_actor_and_address(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    root = await add_user(session, "root", superuser=True)
    eve = await add_user(session, "eve")
    await session.commit()
    admin = admin_for(session, root)
    menu = await admin.create_menu({"title": "Reports", "url": "/reports"})
    await admin.update_menu(menu.id, {"sort": 5})
    role = await admin.create_role("viewer", "reads")
    await admin.update_role(role.id, {"name": "viewers"})
    await admin.set_role_menus(role.id, [menu.id])
    await admin.set_role_permissions(role.id, [CHAT_USE])
    await admin.set_user_roles(eve.id, [role.id])
    await admin.update_user(eve.id, {"is_superuser": True})
    await admin.revoke_user_sessions(eve.id)
    await admin.delete_role(role.id)
    await admin.delete_menu(menu.id, cascade=False)
    await session.commit()

    async with sessions() as fresh:
        entries = list(reversed(await AuditRepository(fresh).list()))
    assert [entry.action for entry in entries] == [
        "menu_created",
        "menu_updated",
        "role_created",
        "role_updated",
        "role_menus_set",
        "role_permissions_set",
        "user_roles_set",
        "user_updated",
        "user_sessions_revoked",
        "role_deleted",
        "menu_deleted",
    ]
    assert {(entry.user_id, entry.actor, entry.client_ip) for entry in entries} == {
        (root.id, "root", CLIENT_IP)
    }


# -- escalation: the grant ceiling -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    """A superuser "root"; the role "admins" granting every permission and every menu; a menu
    "Reports" needing nothing and a menu "Audit" needing audit.view; a role "viewers" granting
    only the menu Reports; "bob", who holds nothing (all committed)."""

    root: Principal
    admins_id: int
    viewers_id: int
    reports_id: int
    audit_id: int
    bob_id: int


@pytest.fixture
async def world(session: AsyncSession) -> World:
    root = await add_user(session, "root", superuser=True)
    menus = MenuRepository(session)
    reports = await menus.add(title="Reports", url="/reports")
    audit = await menus.add(title="Audit", url="/admin/audit", permission=AUDIT_VIEW)
    admins = await add_role(
        session, "admins", permissions=PERMISSIONS, menus=[reports, audit], holders=[root]
    )
    viewers = await add_role(session, "viewers", menus=[reports])
    bob = await add_user(session, "bob")
    await session.commit()
    return World(principal(root), admins.id, viewers.id, reports.id, audit.id, bob.id)


async def actor_holding(
    session: AsyncSession, name: str, *permissions: str, menu_ids: Iterable[int] = ()
) -> tuple[Principal, int]:
    """A committed non-superuser holding exactly ``permissions`` (and ``menu_ids``) through one
    role of its own; returns its principal and that role's id."""
    user = await add_user(session, name)
    role_id = await grant_in_session(session, user.id, *permissions)
    await RoleRepository(session).set_menus(role_id, menu_ids)
    await session.commit()
    return principal(user), role_id


async def role_ids(sessions: async_sessionmaker[AsyncSession], user_id: int) -> set[int]:
    """The roles ``user_id`` holds according to what was committed."""
    async with sessions() as fresh:
        return await UserRepository(fresh).role_ids(user_id)


async def test_a_user_assigner_cannot_give_itself_a_role_holding_what_it_lacks(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    mallory, own_role = await actor_holding(session, "mallory", USERS_VIEW, USERS_ASSIGN)

    for wanted in (world.admins_id, world.viewers_id):  # more permissions; a menu it lacks
        attempt = admin_for(session, mallory).set_user_roles(mallory.user_id, [own_role, wanted])
        await refusal(session, attempt, "grant_ceiling")

    assert await role_ids(sessions, mallory.user_id) == {own_role}


async def test_a_user_assigner_cannot_give_anyone_a_role_holding_what_it_lacks(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    mallory, _ = await actor_holding(session, "mallory", USERS_VIEW, USERS_ASSIGN)

    for wanted in (world.admins_id, world.viewers_id):
        attempt = admin_for(session, mallory).set_user_roles(world.bob_id, [wanted])
        await refusal(session, attempt, "grant_ceiling")

    assert await role_ids(sessions, world.bob_id) == set()


async def test_a_user_assigner_cannot_take_away_a_role_it_could_not_give(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    mallory, _ = await actor_holding(session, "mallory", USERS_VIEW, USERS_ASSIGN)
    await UserRepository(session).set_roles(world.bob_id, [world.viewers_id])
    await session.commit()

    attempt = admin_for(session, mallory).set_user_roles(world.bob_id, [])
    refused = await refusal(session, attempt, "grant_ceiling")

    assert refused.message == Text(
        "you can only grant what you hold yourself: roles {roles} of user {id}",
        roles=str(world.viewers_id),
        id=world.bob_id,
    )
    assert refused.audit_detail == (
        f"grant_ceiling: give or take roles [{world.viewers_id}] of user {world.bob_id}"
    )
    assert await role_ids(sessions, world.bob_id) == {world.viewers_id}


async def test_a_user_assigner_may_give_and_take_roles_within_what_it_holds(
    session: AsyncSession, world: World
) -> None:
    mallory, own_role = await actor_holding(
        session, "mallory", USERS_VIEW, USERS_ASSIGN, menu_ids=[world.reports_id]
    )
    admin = admin_for(session, mallory)
    given = {own_role, world.viewers_id}
    assert await admin.set_user_roles(world.bob_id, given) == given
    assert await admin.set_user_roles(world.bob_id, []) == set()


async def test_a_role_changer_cannot_add_a_permission_it_lacks_to_any_role_not_even_its_own(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    rita, own_role = await actor_holding(session, "rita", ROLES_VIEW, ROLES_CHANGE)
    empty = await RoleRepository(session).add(name="empty")
    empty_id = empty.id
    await session.commit()

    for role_id, wanted in (
        (own_role, {ROLES_VIEW, ROLES_CHANGE, USERS_ASSIGN}),
        (empty_id, {USERS_ASSIGN}),
    ):
        attempt = admin_for(session, rita).set_role_permissions(role_id, wanted)
        await refusal(session, attempt, "grant_ceiling")

    async with sessions() as fresh:
        assert await RoleRepository(fresh).permissions(own_role) == {ROLES_VIEW, ROLES_CHANGE}
        assert await RoleRepository(fresh).permissions(empty_id) == set()


async def test_a_role_changer_cannot_add_a_menu_it_lacks_to_any_role_not_even_its_own(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    rita, own_role = await actor_holding(session, "rita", ROLES_VIEW, ROLES_CHANGE)
    empty = await RoleRepository(session).add(name="empty")
    empty_id = empty.id
    await session.commit()

    for role_id in (own_role, empty_id):
        attempt = admin_for(session, rita).set_role_menus(role_id, [world.reports_id])
        await refusal(session, attempt, "grant_ceiling")

    async with sessions() as fresh:
        assert await RoleRepository(fresh).menu_ids(own_role) == set()
        assert await RoleRepository(fresh).menu_ids(empty_id) == set()


async def test_a_role_changer_cannot_edit_rename_or_delete_a_role_holding_more_than_it(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    rita, _ = await actor_holding(session, "rita", ROLES_VIEW, ROLES_CHANGE)
    attempts: list[Callable[[Admin], Awaitable[object]]] = [
        lambda admin: admin.update_role(world.viewers_id, {"name": "renamed"}),
        lambda admin: admin.update_role(world.admins_id, {"description": "nothing to see"}),
        lambda admin: admin.delete_role(world.admins_id),
        lambda admin: admin.delete_role(world.viewers_id),
        lambda admin: admin.set_role_permissions(world.admins_id, []),
        lambda admin: admin.set_role_menus(world.admins_id, []),
        lambda admin: admin.set_role_menus(world.viewers_id, []),
    ]
    for attempt in attempts:
        await refusal(session, attempt(admin_for(session, rita)), "grant_ceiling")

    async with sessions() as fresh:
        roles = RoleRepository(fresh)
        assert {"admins", "viewers"} <= {role.name for role in await roles.list()}
        assert (await roles.get(world.admins_id)).description is None
        assert await roles.permissions(world.admins_id) == set(PERMISSIONS)
        assert await roles.menu_ids(world.viewers_id) == {world.reports_id}


async def test_a_role_changer_may_build_a_role_from_what_it_holds(
    session: AsyncSession, world: World
) -> None:
    rita, _ = await actor_holding(
        session, "rita", ROLES_VIEW, ROLES_CHANGE, menu_ids=[world.reports_id]
    )
    admin = admin_for(session, rita)
    role = await admin.create_role("readers", None)
    assert await admin.set_role_permissions(role.id, [ROLES_VIEW]) == {ROLES_VIEW}
    assert await admin.set_role_menus(role.id, [world.reports_id]) == {world.reports_id}
    assert (await admin.update_role(role.id, {"name": "report readers"})).name == "report readers"
    await admin.update_role(world.viewers_id, {"description": "see the reports"})
    await admin.delete_role(role.id)


async def test_a_menu_changer_cannot_make_a_menu_need_or_stop_needing_a_permission_it_lacks(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    mona, _ = await actor_holding(session, "mona", MENUS_VIEW, MENUS_CHANGE)
    attempts: list[Callable[[Admin], Awaitable[object]]] = [
        lambda admin: admin.create_menu({"title": "Users", "permission": USERS_VIEW}),
        lambda admin: admin.update_menu(world.reports_id, {"permission": USERS_VIEW}),
        lambda admin: admin.update_menu(world.audit_id, {"permission": None}),
        lambda admin: admin.update_menu(world.audit_id, {"permission": MENUS_VIEW}),
    ]
    for attempt in attempts:
        await refusal(session, attempt(admin_for(session, mona)), "grant_ceiling")

    async with sessions() as fresh:
        menus = {menu.title: menu.permission for menu in await MenuRepository(fresh).list()}
    assert menus == {"Reports": None, "Audit": AUDIT_VIEW}


async def test_a_menu_changer_may_name_a_permission_it_holds(
    session: AsyncSession, world: World
) -> None:
    mona, _ = await actor_holding(session, "mona", MENUS_VIEW, MENUS_CHANGE)
    admin = admin_for(session, mona)
    created = await admin.create_menu({"title": "Menus", "permission": MENUS_CHANGE})
    assert created.permission == MENUS_CHANGE
    changed = await admin.update_menu(world.reports_id, {"permission": MENUS_VIEW})
    assert changed.permission == MENUS_VIEW
    assert (await admin.update_menu(world.reports_id, {"permission": None})).permission is None


async def test_re_pointing_a_held_menu_at_an_admin_page_grants_nothing(
    session: AsyncSession, world: World
) -> None:
    mona, _ = await actor_holding(
        session, "mona", MENUS_VIEW, MENUS_CHANGE, menu_ids=[world.reports_id]
    )
    admin = admin_for(session, mona)
    await admin.update_menu(world.reports_id, {"url": "/admin/users", "title": "Users"})
    assert (await admin.ceiling()).permissions == {MENUS_VIEW, MENUS_CHANGE}


async def test_only_a_superuser_changes_superuser_status(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    # Holding every permission is not being a superuser.
    uma, _ = await actor_holding(session, "uma", *PERMISSIONS)
    for user_id, change in (
        (uma.user_id, {"is_superuser": True}),
        (world.bob_id, {"is_superuser": True}),
        (world.root.user_id, {"is_superuser": False}),
    ):
        attempt = admin_for(session, uma).update_user(user_id, change)
        refused = await refusal(session, attempt, "superuser_required")
        assert refused.message == Text("only a superuser can change superuser status")

    async with sessions() as fresh:
        users = UserRepository(fresh)
        flags = [(await users.get(i)).is_superuser for i in (uma.user_id, world.bob_id)]
        assert flags == [False, False]
        assert await users.count_active_superusers() == 1


async def test_a_non_superuser_cannot_deactivate_re_role_or_end_the_sessions_of_a_superuser(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    uma, _ = await actor_holding(session, "uma", *PERMISSIONS)
    root_id = world.root.user_id
    await add_token(session, await UserRepository(session).get(root_id), "r" * 64)
    await session.commit()
    attempts: list[Callable[[Admin], Awaitable[object]]] = [
        lambda admin: admin.update_user(root_id, {"is_active": False}),
        lambda admin: admin.set_user_roles(root_id, []),
        lambda admin: admin.set_user_roles(root_id, [world.admins_id, world.viewers_id]),
        lambda admin: admin.revoke_user_sessions(root_id),
    ]
    for attempt in attempts:
        await refusal(session, attempt(admin_for(session, uma)), "superuser_required")

    assert await role_ids(sessions, root_id) == {world.admins_id}
    async with sessions() as fresh:
        assert (await UserRepository(fresh).get(root_id)).is_active is True
        assert len(await TokenRepository(fresh).list_live(root_id)) == 1


async def test_a_non_superuser_cannot_act_on_a_user_holding_a_permission_it_lacks(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    uma, _ = await actor_holding(
        session, "uma", USERS_VIEW, USERS_CHANGE, USERS_ASSIGN, SESSIONS_REVOKE
    )
    tess, tess_role = await actor_holding(session, "tess", AUDIT_VIEW)
    attempts: list[Callable[[Admin], Awaitable[object]]] = [
        lambda admin: admin.update_user(tess.user_id, {"is_active": False}),
        lambda admin: admin.set_user_roles(tess.user_id, []),
        lambda admin: admin.revoke_user_sessions(tess.user_id),
    ]
    for attempt in attempts:
        refused = await refusal(session, attempt(admin_for(session, uma)), "user_outranks_you")
        assert AUDIT_VIEW in str(refused.message)

    assert await role_ids(sessions, tess.user_id) == {tess_role}
    # The same actor may act on someone who holds no more than it does.
    admin = admin_for(session, uma)
    assert (await admin.update_user(world.bob_id, {"is_active": False})).is_active is False


async def test_a_deactivated_admin_whose_session_lingers_grants_nothing(
    session: AsyncSession, world: World
) -> None:
    alice, _ = await actor_holding(session, "alice", *ADMIN_PERMISSIONS)
    await admin_for(session, world.root).update_user(alice.user_id, {"is_active": False})
    await session.commit()

    attempt = admin_for(session, alice).set_user_roles(world.bob_id, [world.viewers_id])
    await refusal(session, attempt, "grant_ceiling")
    assert await admin_for(session, alice).admin_permissions() == set()


async def test_a_refusal_is_audited_after_the_refused_change_is_rolled_back(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    mallory, own_role = await actor_holding(session, "mallory", USERS_VIEW, USERS_ASSIGN)
    admin = admin_for(session, mallory)

    refused = await refusal(
        session, admin.set_user_roles(mallory.user_id, [own_role, world.admins_id]), "grant_ceiling"
    )
    await admin.record_refusal(refused)
    await session.commit()

    async with sessions() as fresh:
        [entry] = await AuditRepository(fresh).list(action=REFUSED_ACTION)
        assert await AuditRepository(fresh).list(action="user_roles_set") == []
        assert await UserRepository(fresh).role_ids(mallory.user_id) == {own_role}
    assert (entry.user_id, entry.actor, entry.client_ip) == (mallory.user_id, "mallory", CLIENT_IP)
    assert (entry.detail or "").startswith("grant_ceiling: ")
    assert str(world.admins_id) in (entry.detail or "")


# -- races -----------------------------------------------------------------------------------

Change = Callable[[Admin], Awaitable[object]]
WON = "won"


async def attempt(
    sessions: async_sessionmaker[AsyncSession],
    actor: Principal,
    change: Change,
    start: asyncio.Barrier,
) -> str:
    """Make ``change`` as ``actor`` in a session of its own once every racer is at the start
    line; commit it. Returns ``WON`` or the code of the domain error that refused it."""
    async with sessions() as session:
        await session.connection()  # each racer holds its own connection before the start
        await start.wait()
        try:
            await change(admin_for(session, actor))
        except DomainError as error:
            await session.rollback()
            return error.code
        await session.commit()
        return WON


async def race(
    sessions: async_sessionmaker[AsyncSession], *racers: tuple[Principal, Change]
) -> list[str]:
    """Run every racer's change at the same moment; their outcomes, in racer order."""
    start = asyncio.Barrier(len(racers))
    return list(
        await asyncio.gather(*(attempt(sessions, actor, change, start) for actor, change in racers))
    )


def move(menu_id: int, parent_id: int | None) -> Change:
    async def change(admin: Admin) -> object:
        return await admin.update_menu(menu_id, {"parent_id": parent_id})

    return change


def demote(user_id: int, change: dict[str, bool]) -> Change:
    async def demotion(admin: Admin) -> object:
        return await admin.update_user(user_id, change)

    return demotion


def create(title: str, parent_id: int | None) -> Change:
    async def creation(admin: Admin) -> object:
        return await admin.create_menu({"title": title, "parent_id": parent_id})

    return creation


async def committed_superuser(sessions: async_sessionmaker[AsyncSession], name: str) -> Principal:
    async with sessions() as session:
        user = await add_user(session, name, superuser=True)
        await session.commit()
        return principal(user)


def has_cycle(parents: dict[int, int | None]) -> bool:
    """True when following parents from some menu comes back to a menu already walked."""
    for start in parents:
        seen: set[int] = set()
        current: int | None = start
        while current is not None:
            if current in seen:
                return True
            seen.add(current)
            current = parents.get(current)
    return False


async def test_swapping_two_menus_parents_at_the_same_moment_never_makes_a_cycle(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    root = await committed_superuser(sessions, "root")
    for round_ in range(ROUNDS):
        async with sessions() as session:
            admin = admin_for(session, root)
            a = await admin.create_menu({"title": f"A{round_}"})
            b = await admin.create_menu({"title": f"B{round_}"})
            await session.commit()

        outcomes = await race(sessions, (root, move(a.id, b.id)), (root, move(b.id, a.id)))

        assert sorted(outcomes) == sorted([WON, "menu_cycle"]), f"round {round_}: {outcomes}"
        async with sessions() as session:
            rows = await MenuRepository(session).list()
            assert not has_cycle({menu.id: menu.parent_id for menu in rows})

    async with sessions() as session:
        menus = MenuRepository(session)
        tree = await menus.get_tree()
        assert len(tree) == ROUNDS and all(len(node.children) == 1 for node in tree)
        for node in tree:
            assert len(await admin_for(session, root).delete_menu(node.id, cascade=True)) == 2
        await session.commit()
        assert await menus.count() == 0


async def test_two_superusers_demoting_each_other_at_the_same_moment_leave_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first = await committed_superuser(sessions, "first")
    second = await committed_superuser(sessions, "second")
    for round_ in range(ROUNDS):
        change = {"is_superuser": False} if round_ % 2 == 0 else {"is_active": False}

        outcomes = await race(
            sessions,
            (first, demote(second.user_id, change)),
            (second, demote(first.user_id, change)),
        )

        assert outcomes.count(WON) == 1, f"round {round_}: {outcomes}"
        assert set(outcomes) - {WON} <= {"superuser_required", "last_superuser"}
        async with sessions() as session:
            users = UserRepository(session)
            assert await users.count_active_superusers() == 1
            for user in (first, second):
                await users.update(user.user_id, {"is_superuser": True, "is_active": True})
            await session.commit()


@pytest.mark.parametrize("under_a_parent", [False, True], ids=["at-the-root", "under-a-parent"])
async def test_concurrent_creates_of_one_title_in_one_place_let_exactly_one_win(
    sessions: async_sessionmaker[AsyncSession], under_a_parent: bool
) -> None:
    root = await committed_superuser(sessions, "root")
    parent_id: int | None = None
    if under_a_parent:
        async with sessions() as session:
            parent_id = (await admin_for(session, root).create_menu({"title": "Parent"})).id
            await session.commit()
    for round_ in range(ROUNDS):
        title = f"Reports {round_}"

        outcomes = await race(sessions, *[(root, create(title, parent_id))] * 3)

        assert sorted(outcomes) == ["menu_title_taken", "menu_title_taken", WON], outcomes
    async with sessions() as session:
        titles = [
            menu.title for menu in await MenuRepository(session).list() if menu.title != "Parent"
        ]
    assert sorted(titles) == sorted(f"Reports {round_}" for round_ in range(ROUNDS))


async def test_racing_writers_recreate_a_deleted_admin_lock_row_without_deadlocking(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    root = await committed_superuser(sessions, "root")
    for round_ in range(ROUNDS):
        async with sessions() as session:
            await session.execute(delete(AppLock))
            await session.commit()

        outcomes = await race(sessions, *[(root, create(f"Reports {round_}", None))] * 3)

        assert sorted(outcomes) == ["menu_title_taken", "menu_title_taken", WON], outcomes

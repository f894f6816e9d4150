"""The administration rules (``server.admin.Admin``) on both backends: every change audited and
invalidating the right caches, no one removing their own admin access, the last superuser kept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.audit import AuditRepository
from repositories.errors import Conflict, Forbidden, NotFound
from repositories.menus import MenuRepository
from repositories.models import Menu, Role, User, utcnow
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from server.admin import ADMIN_MENU_URLS, Admin
from server.invalidation import Event
from server.principal import Principal

CLIENT_IP = "192.0.2.7"
NO_SUCH_ID = 2**31 - 1


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


async def add_admin_menus(session: AsyncSession) -> dict[str, Menu]:
    """An "Admin" root with one child per admin page, keyed by url."""
    menus = MenuRepository(session)
    root = await menus.add(title="Admin")
    return {
        url: await menus.add(title=url.rsplit("/", 1)[-1], url=url, parent_id=root.id)
        for url in ADMIN_MENU_URLS
    }


async def add_role(
    session: AsyncSession, name: str, menus: Iterable[Menu], holders: Iterable[User] = ()
) -> Role:
    """A role granting ``menus``, held by ``holders``."""
    role = await RoleRepository(session).add(name=name)
    await RoleRepository(session).set_menus(role.id, [menu.id for menu in menus])
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
    role = await add_role(session, "viewer", [parent, child, kept])
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


# -- own admin access ----------------------------------------------------------------------


@pytest.fixture
async def role_admin(session: AsyncSession) -> tuple[User, Role, dict[str, Menu]]:
    """ "alice", an admin of every admin page only through the role "admins" (committed); a
    superuser "root" exists so the last-superuser rule never gets in the way."""
    await add_user(session, "root", superuser=True)
    alice = await add_user(session, "alice")
    menus = await add_admin_menus(session)
    role = await add_role(session, "admins", menus.values(), [alice])
    await session.commit()
    return alice, role, menus


async def test_an_admin_cannot_remove_their_own_admin_role(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    role_admin: tuple[User, Role, dict[str, Menu]],
) -> None:
    alice, role, _ = role_admin
    alice_id, role_id = alice.id, role.id
    with pytest.raises(Conflict) as refused:
        await admin_for(session, alice).set_user_roles(alice_id, [])
    assert refused.value.code == "own_admin_access"
    assert "/admin/users" in refused.value.message
    await session.rollback()  # the caller's job: the refused change was flushed, never committed
    async with sessions() as fresh:
        assert await UserRepository(fresh).role_ids(alice_id) == {role_id}


async def test_an_admin_cannot_take_an_admin_menu_from_their_own_role(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, role, menus = role_admin
    others = [menu.id for url, menu in menus.items() if url != "/admin/roles"]
    with pytest.raises(Conflict) as refused:
        await admin_for(session, alice).set_role_menus(role.id, others)
    assert refused.value.code == "own_admin_access"
    assert "/admin/roles" in refused.value.message


async def test_an_admin_cannot_delete_their_own_admin_role(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, role, _ = role_admin
    with pytest.raises(Conflict) as refused:
        await admin_for(session, alice).delete_role(role.id)
    assert refused.value.code == "own_admin_access"


async def test_an_admin_cannot_delete_or_re_url_an_admin_menu_they_depend_on(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, _, menus = role_admin
    actor, menu_id = principal(alice), menus["/admin/menus"].id
    with pytest.raises(Conflict) as refused:
        await admin_for(session, actor).delete_menu(menu_id, cascade=False)
    assert refused.value.code == "own_admin_access"
    await session.rollback()
    with pytest.raises(Conflict) as refused:
        await admin_for(session, actor).update_menu(menu_id, {"url": "/admin/menus-old"})
    assert refused.value.code == "own_admin_access"


async def test_an_admin_may_hide_rename_or_move_an_admin_menu_they_keep(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, _, menus = role_admin
    admin = admin_for(session, alice)
    menu = menus["/admin/menus"]
    changed = await admin.update_menu(
        menu.id, {"title": "Menu tree", "visible": False, "parent_id": None}
    )
    assert (changed.title, changed.visible, changed.parent_id) == ("Menu tree", False, None)
    assert await admin.admin_urls() == set(ADMIN_MENU_URLS)


async def test_an_admin_cannot_deactivate_themselves(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, _, _ = role_admin
    with pytest.raises(Conflict) as refused:
        await admin_for(session, alice).update_user(alice.id, {"is_active": False})
    assert refused.value.code == "own_admin_access"


async def test_a_superuser_without_an_admin_role_cannot_demote_themselves(
    session: AsyncSession,
) -> None:
    root = await add_user(session, "root", superuser=True)
    await add_user(session, "other-root", superuser=True)
    await add_admin_menus(session)
    with pytest.raises(Conflict) as refused:
        await admin_for(session, root).update_user(root.id, {"is_superuser": False})
    assert refused.value.code == "own_admin_access"


async def test_a_superuser_with_an_admin_role_may_demote_themselves_to_what_the_role_grants(
    session: AsyncSession,
) -> None:
    root = await add_user(session, "root", superuser=True)
    await add_user(session, "other-root", superuser=True)
    menus = await add_admin_menus(session)
    await add_role(session, "admins", menus.values(), [root])
    user = await admin_for(session, root).update_user(root.id, {"is_superuser": False})
    assert user.is_superuser is False


async def test_removing_another_admins_access_is_allowed(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, role, _ = role_admin
    bob = await add_user(session, "bob")
    await UserRepository(session).set_roles(bob.id, [role.id])
    admin = admin_for(session, alice)
    assert await admin.set_user_roles(bob.id, []) == set()
    assert admin.events == [Event("user", str(bob.id))]


async def test_an_admin_keeps_access_granted_by_a_second_role(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, role, menus = role_admin
    backup = await add_role(session, "backup", menus.values(), [alice])
    admin = admin_for(session, alice)
    assert await admin.set_user_roles(alice.id, [backup.id]) == {backup.id}
    await admin.delete_role(role.id)
    assert await admin.admin_urls() == set(ADMIN_MENU_URLS)


async def test_admin_urls_follow_status_roles_and_hidden_grants(session: AsyncSession) -> None:
    root = await add_user(session, "root", superuser=True)
    carol = await add_user(session, "carol")
    menus = await add_admin_menus(session)
    assert await admin_for(session, root).admin_urls() == set(ADMIN_MENU_URLS)
    assert await admin_for(session, carol).admin_urls() == set()
    hidden = menus["/admin/users"]
    hidden.visible = False
    await add_role(session, "user-admins", [hidden], [carol])
    assert await admin_for(session, carol).admin_urls() == {"/admin/users"}
    carol.is_active = False
    assert await admin_for(session, carol).admin_urls() == set()


# -- users -----------------------------------------------------------------------------------


async def test_the_last_active_superuser_cannot_be_demoted_or_deactivated(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    root = await UserRepository(session).get_by_name("root")
    assert root is not None
    for change in ({"is_superuser": False}, {"is_active": False}):
        with pytest.raises(Conflict) as refused:
            await admin_for(session, root).update_user(root.id, change)
        assert refused.value.code == "last_superuser"


async def test_only_a_superuser_may_change_superuser_status_or_a_superuser(
    session: AsyncSession, role_admin: tuple[User, Role, dict[str, Menu]]
) -> None:
    alice, _, _ = role_admin
    root = await UserRepository(session).get_by_name("root")
    assert root is not None
    for target, change in (
        (alice, {"is_superuser": True}),
        (root, {"is_active": False}),
    ):
        with pytest.raises(Forbidden) as refused:
            await admin_for(session, alice).update_user(target.id, change)
        assert refused.value.code == "superuser_required"


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
        "user_roles_set",
        "user_updated",
        "user_sessions_revoked",
        "role_deleted",
        "menu_deleted",
    ]
    assert {(entry.user_id, entry.actor, entry.client_ip) for entry in entries} == {
        (root.id, "root", CLIENT_IP)
    }

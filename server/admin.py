"""Administration of menus, roles and users: the rules both the JSON API and the admin pages obey.

An ``Admin`` works inside the caller's transaction for one actor. Every change is audited in that
transaction and leaves the cache invalidations it requires in ``events``, which the caller
publishes after commit. Two rules hold whatever the change: the last active superuser stays
(repositories enforce it), and no one removes their own admin access: a change after which the
actor could no longer open an admin page they could open before is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.audit import AuditRepository
from repositories.errors import Conflict, Forbidden
from repositories.menus import MenuRepository
from repositories.models import Menu, Role, User
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from server.invalidation import Event
from server.principal import Principal

ADMIN_MENU_URLS = ("/admin/menus", "/admin/roles", "/admin/users")
"""The menus that guard administration; granting one of them makes a role an admin of it."""


class Admin:
    """One actor's administrative changes within one transaction."""

    def __init__(self, session: AsyncSession, actor: Principal, *, client_ip: str | None) -> None:
        self.session = session
        self.actor = actor
        self.client_ip = client_ip
        self.events: list[Event] = []
        self.menus = MenuRepository(session)
        self.roles = RoleRepository(session)
        self.users = UserRepository(session)

    # -- menus ---------------------------------------------------------------------------

    async def create_menu(self, fields: dict[str, Any]) -> Menu:
        """Create a menu (title, url, note, parent_id, sort, visible)."""
        menu = await self.menus.add(**fields)
        await self._audit("menu_created", f"menu {menu.id} {menu.title!r}")
        self.events.append(Event("menus"))
        return menu

    async def update_menu(self, menu_id: int, changes: dict[str, Any]) -> Menu:
        """Rename, move, reorder, show or hide a menu; never into its own subtree."""
        async with self._keeping_own_access():
            menu = await self.menus.update(menu_id, changes)
        await self._audit("menu_updated", f"menu {menu_id}: {', '.join(sorted(changes))}")
        self.events.append(Event("menus"))
        return menu

    async def delete_menu(self, menu_id: int, *, cascade: bool) -> list[int]:
        """Delete a menu (with ``cascade``, its subtree); grants go with it."""
        async with self._keeping_own_access():
            deleted = await self.menus.delete(menu_id, cascade=cascade)
        await self._audit("menu_deleted", f"menus {deleted}")
        self.events.append(Event("menus"))
        return deleted

    # -- roles ---------------------------------------------------------------------------

    async def create_role(self, name: str, description: str | None) -> Role:
        """Create a role that grants nothing yet."""
        role = await self.roles.add(name=name, description=description)
        await self._audit("role_created", f"role {role.id} {role.name!r}")
        return role

    async def update_role(self, role_id: int, changes: dict[str, Any]) -> Role:
        """Rename or describe a role."""
        role = await self.roles.update(role_id, changes)
        await self._audit("role_updated", f"role {role_id}: {', '.join(sorted(changes))}")
        self.events.append(Event("roles"))
        return role

    async def delete_role(self, role_id: int) -> None:
        """Delete a role; its holders lose its grants."""
        async with self._keeping_own_access():
            await self.roles.delete(role_id)
        await self._audit("role_deleted", f"role {role_id}")
        self.events.append(Event("roles"))

    async def set_role_menus(self, role_id: int, menu_ids: Iterable[int]) -> set[int]:
        """Replace the menus a role grants."""
        async with self._keeping_own_access():
            granted = await self.roles.set_menus(role_id, menu_ids)
        await self._audit("role_menus_set", f"role {role_id}: menus {sorted(granted)}")
        self.events.append(Event("menus"))
        return granted

    # -- users ---------------------------------------------------------------------------

    async def update_user(self, user_id: int, changes: dict[str, Any]) -> User:
        """Activate, deactivate, promote or demote; deactivation ends every session.

        Only a superuser may change superuser status or touch a superuser: being granted the
        user admin menu must not be a way to become (or overrule) one.
        """
        target = await self.users.get(user_id)
        if "is_superuser" in changes or target.is_superuser:
            actor = await self.session.get(User, self.actor.user_id)
            if actor is None or not actor.is_superuser:
                raise Forbidden(
                    "only a superuser can change superuser status or change a superuser",
                    code="superuser_required",
                )
        async with self._keeping_own_access():
            user = await self.users.update(user_id, changes)
        revoked: list[str] = []
        if changes.get("is_active") is False:
            revoked = await TokenRepository(self.session).revoke_all_for_user(user_id)
        detail = ", ".join(f"{key}={value}" for key, value in sorted(changes.items()))
        await self._audit("user_updated", f"user {user_id}: {detail}")
        self.events.append(Event("user", str(user_id)))
        self.events.extend(Event("token", token_hash) for token_hash in revoked)
        return user

    async def set_user_roles(self, user_id: int, role_ids: Iterable[int]) -> set[int]:
        """Replace a user's roles."""
        async with self._keeping_own_access():
            held = await self.users.set_roles(user_id, role_ids)
        await self._audit("user_roles_set", f"user {user_id}: roles {sorted(held)}")
        self.events.append(Event("user", str(user_id)))
        return held

    async def revoke_user_sessions(self, user_id: int) -> int:
        """Revoke every token of a user; returns how many."""
        await self.users.get(user_id)
        revoked = await TokenRepository(self.session).revoke_all_for_user(user_id)
        await self._audit("user_sessions_revoked", f"user {user_id}: {len(revoked)} sessions")
        self.events.extend(Event("token", token_hash) for token_hash in revoked)
        return len(revoked)

    # -- rules ---------------------------------------------------------------------------

    def _keeping_own_access(self) -> _OwnAccessGuard:
        return _OwnAccessGuard(self)

    async def admin_urls(self) -> set[str]:
        """The admin menus the actor can open according to the database right now."""
        user = await self.session.get(User, self.actor.user_id)
        if user is None or not user.is_active:
            return set()
        if user.is_superuser:
            return set(ADMIN_MENU_URLS)
        role_ids = await self.users.role_ids(user.id)
        granted = await self.menus.ids_granted_to_roles(role_ids)
        urls = {menu.url for menu in await self.menus.list() if menu.id in granted and menu.url}
        return urls & set(ADMIN_MENU_URLS)

    async def _audit(self, action: str, detail: str) -> None:
        await AuditRepository(self.session).add(
            action,
            user_id=self.actor.user_id,
            actor=self.actor.name,
            detail=detail,
            client_ip=self.client_ip,
        )


class _OwnAccessGuard:
    """Refuses (with Conflict) a change that takes admin pages away from the actor."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.before: set[str] = set()

    async def __aenter__(self) -> None:
        self.before = await self.admin.admin_urls()

    async def __aexit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is not None:
            return
        await self.admin.session.flush()
        lost = self.before - await self.admin.admin_urls()
        if lost:
            raise Conflict(
                "this change would remove your own admin access to " + ", ".join(sorted(lost)),
                code="own_admin_access",
            )

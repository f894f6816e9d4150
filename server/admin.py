"""Administration of menus, roles and users: the rules both the JSON API and the admin pages obey.

An ``Admin`` works inside the caller's transaction for one actor. Every change is audited in that
transaction and leaves the cache invalidations it requires in ``events``, which the caller
publishes after commit. The route table has already checked that the actor holds the permission
of the call (``roles.change``, ``users.assign``...); the rules here hold whatever the data:

- **Grant ceiling** (Kubernetes RBAC's escalation prevention): a non-superuser may grant only
  what they hold. They may change a role only if they hold every permission and menu it grants,
  before and after the change; give or take a role only if they hold all of it; never act on a
  superuser, nor on a user holding a permission they lack. Only superusers change superuser
  status. A refusal is ``Refused`` (403, its own code) and is audited although it is rolled back.
- **No self lock-out**: a change after which the actor would lose an administration permission
  they hold is refused (409 ``own_admin_access``).
- **The last active superuser stays**, and the menu tree stays acyclic and shallow
  (repositories enforce both under the admin lock).

Every operation first takes the admin lock (``repositories/locks.py``) and reads the actor's
grants after it, so racing changes are checked one at a time against fresh data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.audit import AuditRepository
from repositories.errors import Conflict, Forbidden
from repositories.locks import hold
from repositories.menus import MenuRepository
from repositories.models import Menu, Role, User
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.text import Text
from server.invalidation import Event
from server.permissions import ADMIN_PERMISSIONS, PERMISSIONS
from server.principal import Principal

REFUSED_ACTION = "admin_refused"
"""The audit action of a refused administrative change."""


class Refused(Forbidden):
    """A change beyond the actor's grants: 403 with a specific code, audited as
    ``admin_refused`` even though the change itself is rolled back."""

    def __init__(self, message: Text, *, code: str, attempted: str) -> None:
        super().__init__(message, code=code)
        self.audit_action = REFUSED_ACTION
        self.audit_detail = f"{code}: {attempted}"[:255]


@dataclass(frozen=True, slots=True)
class Ceiling:
    """What an actor holds right now, read from the database under the admin lock."""

    superuser: bool
    permissions: frozenset[str]
    menu_ids: frozenset[int]

    def holds(self, permissions: Iterable[str] = (), menu_ids: Iterable[int] = ()) -> bool:
        """True when every one of ``permissions`` and ``menu_ids`` is held (all, for a
        superuser)."""
        if self.superuser:
            return True
        return set(permissions) <= self.permissions and set(menu_ids) <= self.menu_ids

    def effective_permissions(self) -> frozenset[str]:
        """The permission codes held (every registered one for a superuser)."""
        return frozenset(PERMISSIONS) if self.superuser else self.permissions


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
        """Create a menu (title, url, note, parent_id, sort, visible, permission)."""
        ceiling = await self.ceiling()
        permission = fields.get("permission")
        if permission is not None and not ceiling.holds(permissions=[permission]):
            raise self._beyond_ceiling(
                f"create a menu needing {permission}",
                Text(
                    "you can only grant what you hold yourself: a menu needing {permission}",
                    permission=permission,
                ),
            )
        menu = await self.menus.add(**fields)
        await self._audit("menu_created", f"menu {menu.id} {menu.title!r}")
        self.events.append(Event("menus"))
        return menu

    async def update_menu(self, menu_id: int, changes: dict[str, Any]) -> Menu:
        """Rename, move, reorder, show or hide a menu, or change the permission it names
        (only between permissions the actor holds); never into its own subtree."""
        ceiling = await self.ceiling()
        if "permission" in changes:
            current = (await self.menus.get(menu_id)).permission
            named = {code for code in (current, changes["permission"]) if code is not None}
            if not ceiling.holds(permissions=named):
                raise self._beyond_ceiling(
                    f"change menu {menu_id}'s permission",
                    Text(
                        "you can only grant what you hold yourself: menu {id} names or would "
                        "name a permission you do not hold",
                        id=menu_id,
                    ),
                )
        async with self._keeping_own_access():
            menu = await self.menus.update(menu_id, changes)
        await self._audit("menu_updated", f"menu {menu_id}: {', '.join(sorted(changes))}")
        self.events.append(Event("menus"))
        return menu

    async def delete_menu(self, menu_id: int, *, cascade: bool) -> list[int]:
        """Delete a menu (with ``cascade``, its subtree); grants go with it."""
        await self.ceiling()
        async with self._keeping_own_access():
            deleted = await self.menus.delete(menu_id, cascade=cascade)
        await self._audit("menu_deleted", f"menus {deleted}"[:255])
        self.events.append(Event("menus"))
        return deleted

    # -- roles ---------------------------------------------------------------------------

    async def create_role(self, name: str, description: str | None) -> Role:
        """Create a role that grants nothing yet."""
        await self.ceiling()
        role = await self.roles.add(name=name, description=description)
        await self._audit("role_created", f"role {role.id} {role.name!r}")
        return role

    async def update_role(self, role_id: int, changes: dict[str, Any]) -> Role:
        """Rename or describe a role the actor holds all of."""
        await self._require_whole_role(
            role_id,
            "change",
            Text("you can only change a role whose every grant you hold: role {id}", id=role_id),
        )
        role = await self.roles.update(role_id, changes)
        await self._audit("role_updated", f"role {role_id}: {', '.join(sorted(changes))}")
        self.events.append(Event("roles"))
        return role

    async def delete_role(self, role_id: int) -> None:
        """Delete a role the actor holds all of; its holders lose its grants."""
        await self._require_whole_role(
            role_id,
            "delete",
            Text("you can only delete a role whose every grant you hold: role {id}", id=role_id),
        )
        async with self._keeping_own_access():
            await self.roles.delete(role_id)
        await self._audit("role_deleted", f"role {role_id}")
        self.events.append(Event("roles"))

    async def set_role_menus(self, role_id: int, menu_ids: Iterable[int]) -> set[int]:
        """Replace the menus a role grants, all of which the actor must hold."""
        ceiling = await self._require_whole_role(
            role_id,
            "change the menus of",
            Text(
                "you can only change the menus of a role whose every grant you hold: role {id}",
                id=role_id,
            ),
        )
        async with self._keeping_own_access():
            granted = await self.roles.set_menus(role_id, menu_ids)
        if not ceiling.holds(menu_ids=granted):
            missing = sorted(granted - ceiling.menu_ids)
            raise self._beyond_ceiling(
                f"grant menus {missing} to role {role_id}",
                Text(
                    "you can only grant what you hold yourself: menus {menus} to role {id}",
                    menus=", ".join(str(menu_id) for menu_id in missing),
                    id=role_id,
                ),
            )
        await self._audit("role_menus_set", f"role {role_id}: menus {sorted(granted)}"[:255])
        self.events.append(Event("menus"))
        return granted

    async def set_role_permissions(self, role_id: int, permissions: Iterable[str]) -> set[str]:
        """Replace the permissions a role grants, all of which the actor must hold."""
        ceiling = await self._require_whole_role(
            role_id,
            "change the permissions of",
            Text(
                "you can only change the permissions of a role whose every grant you hold: "
                "role {id}",
                id=role_id,
            ),
        )
        wanted = set(permissions)
        if not ceiling.holds(permissions=wanted):
            missing = sorted(wanted - ceiling.permissions)
            raise self._beyond_ceiling(
                f"grant {', '.join(missing)} to role {role_id}",
                Text(
                    "you can only grant what you hold yourself: {permissions} to role {id}",
                    permissions=", ".join(missing),
                    id=role_id,
                ),
            )
        async with self._keeping_own_access():
            granted = await self.roles.set_permissions(role_id, wanted)
        await self._audit(
            "role_permissions_set", f"role {role_id}: {', '.join(sorted(granted))}"[:255]
        )
        self.events.append(Event("roles"))
        return granted

    # -- users ---------------------------------------------------------------------------

    async def update_user(self, user_id: int, changes: dict[str, Any]) -> User:
        """Activate, deactivate, promote or demote; deactivation ends every session.

        Only a superuser may change superuser status or touch a superuser: holding
        ``users.change`` must not be a way to become (or overrule) one.
        """
        if "is_superuser" in changes and not (await self.ceiling()).superuser:
            raise Refused(
                Text("only a superuser can change superuser status"),
                code="superuser_required",
                attempted=f"change superuser status of user {user_id}",
            )
        await self._require_outranking(user_id, "change")
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
        """Replace a user's roles: every role given or taken must be within the actor's grants."""
        ceiling = await self._require_outranking(user_id, "change the roles of")
        before = await self.users.role_ids(user_id)
        async with self._keeping_own_access():
            held = await self.users.set_roles(user_id, role_ids)
        changed = held ^ before
        if changed and not ceiling.superuser:
            menus = await self.roles.menu_ids_by_role(changed)
            permissions = await self.roles.permissions_by_role(changed)
            beyond = sorted(
                role_id
                for role_id in changed
                if not ceiling.holds(permissions.get(role_id, ()), menus.get(role_id, ()))
            )
            if beyond:
                raise self._beyond_ceiling(
                    f"give or take roles {beyond} of user {user_id}",
                    Text(
                        "you can only grant what you hold yourself: roles {roles} of user {id}",
                        roles=", ".join(str(role_id) for role_id in beyond),
                        id=user_id,
                    ),
                )
        await self._audit("user_roles_set", f"user {user_id}: roles {sorted(held)}"[:255])
        self.events.append(Event("user", str(user_id)))
        return held

    async def revoke_user_sessions(self, user_id: int) -> int:
        """Revoke every token of a user; returns how many."""
        await self._require_outranking(user_id, "revoke the sessions of")
        revoked = await TokenRepository(self.session).revoke_all_for_user(user_id)
        await self._audit("user_sessions_revoked", f"user {user_id}: {len(revoked)} sessions")
        self.events.extend(Event("token", token_hash) for token_hash in revoked)
        return len(revoked)

    # -- rules ---------------------------------------------------------------------------

    async def ceiling(self) -> Ceiling:
        """Take the admin lock, then read what the actor holds now (nothing when inactive)."""
        await hold(self.session)
        user = await self.session.get(User, self.actor.user_id)
        if user is not None:
            await self.session.refresh(user)
        if user is None or not user.is_active:
            return Ceiling(False, frozenset(), frozenset())
        if user.is_superuser:
            return Ceiling(True, frozenset(), frozenset())
        role_ids = await self.users.role_ids(user.id)
        return Ceiling(
            False,
            frozenset(await self.roles.permissions_granted_to_roles(role_ids)),
            frozenset(await self.menus.ids_granted_to_roles(role_ids)),
        )

    async def admin_permissions(self) -> set[str]:
        """The administration permissions the actor holds according to the database now."""
        return set((await self.ceiling()).effective_permissions() & ADMIN_PERMISSIONS)

    async def _require_whole_role(self, role_id: int, verb: str, refusal: Text) -> Ceiling:
        """The actor's ceiling, once it is known to hold every grant of role ``role_id``
        (otherwise ``Refused`` with ``refusal``; ``verb`` words the audit entry)."""
        ceiling = await self.ceiling()
        await self.roles.get(role_id)
        if ceiling.superuser:
            return ceiling
        permissions = await self.roles.permissions(role_id)
        menu_ids = await self.roles.menu_ids(role_id)
        if not ceiling.holds(permissions, menu_ids):
            raise self._beyond_ceiling(f"{verb} role {role_id}", refusal)
        return ceiling

    async def _require_outranking(self, user_id: int, verb: str) -> Ceiling:
        """The actor's ceiling, once it is known the target is no superuser (unless the actor
        is one) and holds no permission the actor lacks."""
        ceiling = await self.ceiling()
        target = await self.users.get(user_id)
        if ceiling.superuser:
            return ceiling
        if target.is_superuser:
            raise Refused(
                Text("only a superuser can change a superuser"),
                code="superuser_required",
                attempted=f"{verb} superuser {user_id}",
            )
        held = await self.roles.permissions_granted_to_roles(await self.users.role_ids(user_id))
        if not held <= ceiling.permissions:
            raise Refused(
                Text(
                    "this user holds permissions you do not: {permissions}",
                    permissions=", ".join(sorted(held - ceiling.permissions)),
                ),
                code="user_outranks_you",
                attempted=f"{verb} user {user_id}",
            )
        return ceiling

    def _beyond_ceiling(self, attempted: str, message: Text) -> Refused:
        """A ``grant_ceiling`` refusal: ``message`` for the reader, ``attempted`` (English, like
        every audit detail) for the log."""
        return Refused(message, code="grant_ceiling", attempted=attempted)

    def _keeping_own_access(self) -> _OwnAccessGuard:
        return _OwnAccessGuard(self)

    async def record_refusal(self, refused: Refused) -> None:
        """Audit ``refused`` (call it after rolling the refused change back)."""
        await self._audit(refused.audit_action, refused.audit_detail)

    async def _audit(self, action: str, detail: str) -> None:
        await AuditRepository(self.session).add(
            action,
            user_id=self.actor.user_id,
            actor=self.actor.name,
            detail=detail,
            client_ip=self.client_ip,
        )


class _OwnAccessGuard:
    """Refuses (with Conflict) a change that takes administration permissions from the actor."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.before: set[str] = set()

    async def __aenter__(self) -> None:
        self.before = await self.admin.admin_permissions()

    async def __aexit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is not None:
            return
        await self.admin.session.flush()
        lost = self.before - await self.admin.admin_permissions()
        if lost:
            raise Conflict(
                Text(
                    "this change would remove your own administration permissions: {permissions}",
                    permissions=", ".join(sorted(lost)),
                ),
                code="own_admin_access",
            )

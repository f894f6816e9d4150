"""The menu, role and user administration JSON API (``/api/menus``, ``/api/roles``,
``/api/users``, ``/api/permissions``) and the caller's own menu tree (``/user/me/menus``).

``admin_api_routes`` declares the permission each route needs, per method; ``prepare`` enforces
it. The changes themselves go through ``server.admin.Admin``, which audits them, enforces the
grant ceiling, the last-superuser and own-admin-access rules, and lists the cache invalidations
to publish once the transaction has committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field
from tornado.routing import Rule

from repositories.menus import MenuRepository
from repositories.models import Role, User
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from schemas.admin_user import (
    SessionsRevoked,
    UserAdminRead,
    UserAdminResponse,
    UserPage,
    UserRoles,
    UserStatusUpdate,
)
from schemas.common import Success
from schemas.menu import (
    MenuCreate,
    MenuDeleted,
    MenuList,
    MenuRead,
    MenuResponse,
    MenuTree,
    MenuTreeNode,
    MenuUpdate,
)
from schemas.permission import PermissionList, PermissionRead
from schemas.role import (
    RoleCreate,
    RoleList,
    RoleMenus,
    RolePermissions,
    RoleRead,
    RoleResponse,
    RoleUpdate,
)
from schemas.user import UserRead
from server.admin import Admin
from server.handlers.base import ApiHandler, QuerySchema
from server.i18n import locale_for, translate
from server.openapi import Operation
from server.permissions import (
    LOGIN,
    MENUS_CHANGE,
    MENUS_VIEW,
    PERMISSIONS,
    ROLES_CHANGE,
    ROLES_VIEW,
    SESSIONS_REVOKE,
    USERS_ASSIGN,
    USERS_CHANGE,
    USERS_VIEW,
    requires,
    route,
)
from server.principal import Principal

MENU_ID = r"(?P<menu_id>[0-9]{1,10})"
ROLE_ID = r"(?P<role_id>[0-9]{1,10})"
USER_ID = r"(?P<user_id>[0-9]{1,10})"

MAX_PAGE = 200

# -- query strings ---------------------------------------------------------------------------

Flag = Literal["0", "1", "true", "false"]
"""A boolean query parameter, spelled strictly: anything else is refused rather than guessed."""


def flag(value: Flag) -> bool:
    """The boolean a ``Flag`` spells."""
    return value in ("1", "true")


class MenuListQuery(QuerySchema):
    """``GET /api/menus?flat=1``: a flat list instead of the tree."""

    flat: Flag = "0"


class MenuDeleteQuery(QuerySchema):
    """``DELETE /api/menus/{id}?cascade=1``: delete the subtree too."""

    cascade: Flag = "0"


class UserListQuery(QuerySchema):
    """``GET /api/users?offset=0&limit=50&q=name``."""

    offset: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50
    q: Annotated[str, Field(max_length=64)] = ""


# -- shared plumbing ---------------------------------------------------------------------------


class AdminApiHandler(ApiHandler):
    """Helpers shared by the administration handlers."""

    def actor(self) -> Principal:
        """The caller (``prepare`` already refused anonymous callers of admin handlers)."""
        return self.current_login().principal

    def admin(self) -> Admin:
        """The administrative rules, acting as the caller inside this request's transaction."""
        return Admin(self.db, self.actor(), client_ip=self.request.remote_ip)

    async def role_read(
        self,
        role: Role,
        menu_ids: Iterable[int] | None = None,
        permissions: Iterable[str] | None = None,
    ) -> RoleRead:
        """``role`` with the menus and permissions it grants (read when not given)."""
        if menu_ids is None:
            menu_ids = await RoleRepository(self.db).menu_ids(role.id)
        if permissions is None:
            permissions = await RoleRepository(self.db).permissions(role.id)
        return RoleRead(
            id=role.id,
            name=role.name,
            description=role.description,
            menu_ids=sorted(menu_ids),
            permissions=sorted(permissions),
        )

    async def user_read(self, user: User, role_ids: Iterable[int] | None = None) -> UserAdminRead:
        """``user`` with the ids of the roles they hold (read when not given)."""
        if role_ids is None:
            role_ids = await UserRepository(self.db).role_ids(user.id)
        return UserAdminRead(
            **UserRead.model_validate(user).model_dump(), role_ids=sorted(role_ids)
        )


# -- menus -----------------------------------------------------------------------------------


class MenusHandler(AdminApiHandler):
    """``/api/menus``: the whole menu tree (or a flat list), and new menus."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Every menu as a tree (hidden ones included)",
            MenuTree,
            errors=(400, 403, 422),
            description="`?flat=1` (or `true`) answers a flat `MenuList` instead of the tree; "
            "`flat` accepts only `0`, `1`, `true` and `false`.",
            tags=("menus",),
            query=MenuListQuery,
        ),
        "POST": Operation(
            "Create a menu (a root when parent_id is null)",
            MenuResponse,
            status=201,
            request=MenuCreate,
            errors=(403, 404, 409),
            description="404 when parent_id does not exist; 409 when the title is taken under "
            "that parent or the url by any menu.",
            tags=("menus",),
        ),
    }

    async def get(self) -> None:
        """The tree, or with ``?flat=1`` every menu in display order."""
        flat = flag(self.query(MenuListQuery).flat)
        menus = MenuRepository(self.db)
        if flat:
            items = [MenuRead.model_validate(menu) for menu in await menus.list()]
            await self.respond(MenuList(items=items, count=len(items)))
            return
        tree = await menus.get_tree()
        await self.respond(MenuTree(menus=[MenuTreeNode.model_validate(node) for node in tree]))

    async def post(self) -> None:
        """Create a menu; 201 with it."""
        body = self.parse(MenuCreate)
        admin = self.admin()
        menu = await admin.create_menu(body.model_dump())
        self.publish_after_commit(*admin.events)
        await self.respond(MenuResponse(menu=MenuRead.model_validate(menu)), status=201)


class MenuHandler(AdminApiHandler):
    """``/api/menus/{id}``: read, change or delete one menu."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation("One menu", MenuResponse, errors=(403,), tags=("menus",)),
        "PATCH": Operation(
            "Change any of title, url, note, parent_id, sort, visible",
            MenuResponse,
            request=MenuUpdate,
            errors=(403, 409),
            description="Only the fields given change; `parent_id: null` makes the menu a root. "
            "409 for a move into its own subtree, a title taken under the parent, a url taken, "
            "or a change that would take away your own admin access.",
            tags=("menus",),
        ),
        "DELETE": Operation(
            "Delete a menu and its grants",
            MenuDeleted,
            errors=(400, 403, 409, 422),
            description="A menu with children is refused (409) unless `?cascade=1` (or `true`), "
            "which deletes the whole subtree; `cascade` accepts only `0`, `1`, `true`, `false`.",
            tags=("menus",),
            query=MenuDeleteQuery,
        ),
    }

    async def get(self, menu_id: str) -> None:
        """The menu, or 404."""
        menu = await MenuRepository(self.db).get(int(menu_id))
        await self.respond(MenuResponse(menu=MenuRead.model_validate(menu)))

    async def patch(self, menu_id: str) -> None:
        """Apply the fields that were sent, and only those."""
        changes = self.parse(MenuUpdate).model_dump(exclude_unset=True)
        admin = self.admin()
        menu = await admin.update_menu(int(menu_id), changes)
        self.publish_after_commit(*admin.events)
        await self.respond(MenuResponse(menu=MenuRead.model_validate(menu)))

    async def delete(self, menu_id: str) -> None:
        """Delete the menu (with ``?cascade=1`` its subtree); answer the deleted ids."""
        cascade = flag(self.query(MenuDeleteQuery).cascade)
        admin = self.admin()
        deleted = await admin.delete_menu(int(menu_id), cascade=cascade)
        self.publish_after_commit(*admin.events)
        await self.respond(MenuDeleted(deleted=deleted))


# -- roles -----------------------------------------------------------------------------------


class RolesHandler(AdminApiHandler):
    """``/api/roles``: every role with its menus, and new roles."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Every role with the menus it grants",
            RoleList,
            errors=(403,),
            tags=("roles",),
        ),
        "POST": Operation(
            "Create a role (it grants nothing yet)",
            RoleResponse,
            status=201,
            request=RoleCreate,
            errors=(403, 409),
            tags=("roles",),
        ),
    }

    async def get(self) -> None:
        """Every role, by name."""
        roles = RoleRepository(self.db)
        listed = await roles.list()
        grants = await roles.menu_ids_by_role(role.id for role in listed)
        permissions = await roles.permissions_by_role(role.id for role in listed)
        items = [
            await self.role_read(role, grants.get(role.id, ()), permissions.get(role.id, ()))
            for role in listed
        ]
        await self.respond(RoleList(items=items, count=len(items)))

    async def post(self) -> None:
        """Create a role; 201 with it, 409 when the name is taken."""
        body = self.parse(RoleCreate)
        admin = self.admin()
        role = await admin.create_role(body.name, body.description)
        self.publish_after_commit(*admin.events)
        await self.respond(RoleResponse(role=await self.role_read(role, (), ())), status=201)


class RoleHandler(AdminApiHandler):
    """``/api/roles/{id}``: read, rename or delete one role."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "One role with the menus it grants",
            RoleResponse,
            errors=(403,),
            tags=("roles",),
        ),
        "PATCH": Operation(
            "Rename or describe a role",
            RoleResponse,
            request=RoleUpdate,
            errors=(403, 409),
            tags=("roles",),
        ),
        "DELETE": Operation(
            "Delete a role; its holders lose its grants",
            Success,
            errors=(403, 409),
            description="409 when it would take away your own admin access.",
            tags=("roles",),
        ),
    }

    async def get(self, role_id: str) -> None:
        """The role, or 404."""
        role = await RoleRepository(self.db).get(int(role_id))
        await self.respond(RoleResponse(role=await self.role_read(role)))

    async def patch(self, role_id: str) -> None:
        """Apply the fields that were sent; 409 when the new name is taken."""
        changes = self.parse(RoleUpdate).model_dump(exclude_unset=True)
        admin = self.admin()
        role = await admin.update_role(int(role_id), changes)
        self.publish_after_commit(*admin.events)
        await self.respond(RoleResponse(role=await self.role_read(role)))

    async def delete(self, role_id: str) -> None:
        """Delete the role, its grants and memberships."""
        admin = self.admin()
        await admin.delete_role(int(role_id))
        self.publish_after_commit(*admin.events)
        await self.respond(Success())


class RoleMenusHandler(AdminApiHandler):
    """``/api/roles/{id}/menus``: replace the menus a role grants."""

    operations: ClassVar[dict[str, Operation]] = {
        "PUT": Operation(
            "Replace the menus a role grants",
            RoleResponse,
            request=RoleMenus,
            errors=(403, 409),
            description="404 when the role or any of the menus does not exist; 409 when it "
            "would take away your own admin access.",
            tags=("roles",),
        )
    }

    async def put(self, role_id: str) -> None:
        """Grant exactly ``menu_ids``."""
        body = self.parse(RoleMenus)
        admin = self.admin()
        granted = await admin.set_role_menus(int(role_id), body.menu_ids)
        role = await RoleRepository(self.db).get(int(role_id))
        self.publish_after_commit(*admin.events)
        await self.respond(RoleResponse(role=await self.role_read(role, granted)))


class RolePermissionsHandler(AdminApiHandler):
    """``/api/roles/{id}/permissions``: replace the permissions a role grants."""

    operations: ClassVar[dict[str, Operation]] = {
        "PUT": Operation(
            "Replace the permissions a role grants",
            RoleResponse,
            request=RolePermissions,
            errors=(403, 409),
            description="Only permissions you hold yourself, on a role whose every grant you "
            "hold (403 `grant_ceiling`, unless you are a superuser); 422 for an unknown code; "
            "409 when it would take away your own administration permissions.",
            tags=("roles",),
        )
    }

    async def put(self, role_id: str) -> None:
        """Grant exactly ``permissions``."""
        body = self.parse(RolePermissions)
        admin = self.admin()
        granted = await admin.set_role_permissions(int(role_id), body.permissions)
        role = await RoleRepository(self.db).get(int(role_id))
        self.publish_after_commit(*admin.events)
        await self.respond(RoleResponse(role=await self.role_read(role, None, granted)))


class PermissionsHandler(ApiHandler):
    """``/api/permissions``: every permission a role can grant, with its meaning."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Every permission and what it allows",
            PermissionList,
            description="`meaning` is in the caller's language (the account's, else "
            "`Accept-Language`, else Chinese); `meaning_zh` is always Chinese.",
            tags=("roles",),
        )
    }

    async def get(self) -> None:
        """The registry, in its order: each meaning in the caller's language (``meaning_zh``
        always in Chinese, as before ``meaning`` followed the caller's language)."""
        chinese = locale_for("zh_CN")
        items = [
            PermissionRead(
                code=item.code,
                meaning=self.text(item.meaning),
                meaning_zh=translate(chinese, item.meaning),
            )
            for item in PERMISSIONS.values()
        ]
        await self.respond(PermissionList(items=items, count=len(items)))


# -- users -----------------------------------------------------------------------------------


class UsersHandler(AdminApiHandler):
    """``/api/users``: a page of users, optionally those whose name contains ``q``."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "A page of users with their role ids",
            UserPage,
            errors=(400, 403, 422),
            description=f"`?offset=0&limit=50` (limit 1 to {MAX_PAGE}); `?q=` keeps the users "
            "whose name contains it. Bad values are 422 naming the parameter.",
            tags=("users",),
            query=UserListQuery,
        )
    }

    async def get(self) -> None:
        """The page asked for, and how many users match over all pages."""
        page = self.query(UserListQuery)
        users = UserRepository(self.db)
        rows = await users.list(offset=page.offset, limit=page.limit, name_contains=page.q)
        held = await users.role_ids_by_user(user.id for user in rows)
        items = [await self.user_read(user, held.get(user.id, ())) for user in rows]
        count = await users.count(name_contains=page.q)
        await self.respond(UserPage(items=items, count=count, offset=page.offset, limit=page.limit))


class UserAdminHandler(AdminApiHandler):
    """``/api/users/{id}``: read a user; activate, deactivate, promote or demote them."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "One user with their role ids",
            UserAdminResponse,
            errors=(403,),
            tags=("users",),
        ),
        "PATCH": Operation(
            "Activate, deactivate, promote or demote a user",
            UserAdminResponse,
            request=UserStatusUpdate,
            errors=(403, 409),
            description="Deactivation revokes every token of the user. Only a superuser may "
            "change superuser status or change a superuser (403). 409 for the last active "
            "superuser, or a change that would take away your own admin access.",
            tags=("users",),
        ),
    }

    async def get(self, user_id: str) -> None:
        """The user, or 404."""
        user = await UserRepository(self.db).get(int(user_id))
        await self.respond(UserAdminResponse(user=await self.user_read(user)))

    async def patch(self, user_id: str) -> None:
        """Apply ``is_active`` and ``is_superuser`` as sent."""
        changes = self.parse(UserStatusUpdate).model_dump(exclude_unset=True)
        admin = self.admin()
        user = await admin.update_user(int(user_id), changes)
        self.publish_after_commit(*admin.events)
        await self.respond(UserAdminResponse(user=await self.user_read(user)))


class UserRolesHandler(AdminApiHandler):
    """``/api/users/{id}/roles``: replace a user's roles."""

    operations: ClassVar[dict[str, Operation]] = {
        "PUT": Operation(
            "Replace the roles a user holds",
            UserAdminResponse,
            request=UserRoles,
            errors=(403, 409),
            description="404 when the user or any of the roles does not exist; 409 when it "
            "would take away your own admin access.",
            tags=("users",),
        )
    }

    async def put(self, user_id: str) -> None:
        """Give the user exactly ``role_ids``; they see it on their next request."""
        body = self.parse(UserRoles)
        admin = self.admin()
        held = await admin.set_user_roles(int(user_id), body.role_ids)
        user = await UserRepository(self.db).get(int(user_id))
        self.publish_after_commit(*admin.events)
        await self.respond(UserAdminResponse(user=await self.user_read(user, held)))


class UserSessionsAdminHandler(AdminApiHandler):
    """``/api/users/{id}/sessions``: log a user out everywhere."""

    operations: ClassVar[dict[str, Operation]] = {
        "DELETE": Operation(
            "Revoke every token of a user",
            SessionsRevoked,
            errors=(403,),
            tags=("users",),
        )
    }

    async def delete(self, user_id: str) -> None:
        """Revoke them all; answer how many were live."""
        admin = self.admin()
        revoked = await admin.revoke_user_sessions(int(user_id))
        self.publish_after_commit(*admin.events)
        await self.respond(SessionsRevoked(revoked=revoked))


# -- the caller's own menus ---------------------------------------------------------------------


class MyMenusHandler(ApiHandler):
    """``GET /user/me/menus``: the menu tree the caller's roles grant (from the cache when warm)."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "The current user's menu tree",
            MenuTree,
            description="Built-in menus' titles are in the caller's language (the account's, "
            "else `Accept-Language`, else Chinese); a title an admin typed is as typed.",
            tags=("user", "menus"),
        )
    }

    async def get(self) -> None:
        """The visible tree of the caller's grants; everything for a superuser."""
        login = self.current_login()
        tree = await self.services.menus.tree_json_for(login.principal, self.locale.code)
        await self.respond_json(b'{"msg":"success","menus":%s}' % tree)  # MenuTree, pre-encoded


def admin_api_routes(deps: dict[str, Any]) -> list[Rule]:
    """The routes of this module, each with the permission it needs."""
    return [
        route(
            r"/api/menus",
            MenusHandler,
            deps,
            name="api-menus",
            need=requires(MENUS_VIEW, POST=MENUS_CHANGE),
        ),
        route(
            rf"/api/menus/{MENU_ID}",
            MenuHandler,
            deps,
            name="api-menu",
            need=requires(MENUS_VIEW, PATCH=MENUS_CHANGE, DELETE=MENUS_CHANGE),
        ),
        route(
            r"/api/roles",
            RolesHandler,
            deps,
            name="api-roles",
            need=requires(ROLES_VIEW, POST=ROLES_CHANGE),
        ),
        route(
            rf"/api/roles/{ROLE_ID}",
            RoleHandler,
            deps,
            name="api-role",
            need=requires(ROLES_VIEW, PATCH=ROLES_CHANGE, DELETE=ROLES_CHANGE),
        ),
        route(
            rf"/api/roles/{ROLE_ID}/menus",
            RoleMenusHandler,
            deps,
            name="api-role-menus",
            need=ROLES_CHANGE,
        ),
        route(
            rf"/api/roles/{ROLE_ID}/permissions",
            RolePermissionsHandler,
            deps,
            name="api-role-permissions",
            need=ROLES_CHANGE,
        ),
        route(r"/api/permissions", PermissionsHandler, deps, name="api-permissions", need=LOGIN),
        route(r"/api/users", UsersHandler, deps, name="api-users", need=USERS_VIEW),
        route(
            rf"/api/users/{USER_ID}",
            UserAdminHandler,
            deps,
            name="api-user",
            need=requires(USERS_VIEW, PATCH=USERS_CHANGE),
        ),
        route(
            rf"/api/users/{USER_ID}/roles",
            UserRolesHandler,
            deps,
            name="api-user-roles",
            need=USERS_ASSIGN,
        ),
        route(
            rf"/api/users/{USER_ID}/sessions",
            UserSessionsAdminHandler,
            deps,
            name="api-user-sessions",
            need=SESSIONS_REVOKE,
        ),
        route(r"/user/me/menus", MyMenusHandler, deps, name="user-me-menus", need=LOGIN),
    ]

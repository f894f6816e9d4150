"""The admin pages: the menu tree editor, roles with menu and permission checklists, users with
their roles.

``admin_page_routes`` declares the permission each page and action needs: a visitor is sent to
the login form, a user without it gets the 403 page. Every change is a plain HTML form
(XSRF-protected, usable without JavaScript) posted to an action route; the action goes through
``server.admin.Admin`` (audited, within the actor's grants, the actor's own admin access kept)
and answers post/redirect/get: a 302 back to its page with a flash message saying what changed,
or why nothing did (the Conflict, NotFound or Refused message, or the invalid fields). A refused
change is rolled back before the redirect, because the 302 is a success status and would
otherwise commit whatever was written before the refusal; a ``Refused`` one is then audited.
A refused menu create or update does not redirect: the editor is rendered again with the refusal's
status (422 invalid, 409 conflict, 404, 403) and what the admin typed, so nothing is retyped.

URLs (``{id}`` is the row's numeric id; every route but the three pages is POST only):

    GET  /admin/menus                  the tree editor
    POST /admin/menus/create           title, url, note, visible, parent_id ("" = top level),
                                       permission, audience (all|visitors|members);
                                       the new menu goes last among its siblings
    POST /admin/menus/{id}/update      title, url, note, visible (an unchecked box hides it),
                                       permission, audience
    POST /admin/menus/{id}/move        parent_id ("" = top level); it goes last there
    POST /admin/menus/{id}/reorder     direction=up|down: trade places with that sibling
    POST /admin/menus/{id}/delete      cascade=1 also deletes its subtree
    GET  /admin/roles                  every role with its menu and permission checklists
    POST /admin/roles/create           name, description
    POST /admin/roles/{id}/update      name, description
    POST /admin/roles/{id}/menus       menu_id, repeated: the role's complete menu set
    POST /admin/roles/{id}/permissions permission, repeated: the role's complete permission set
    POST /admin/roles/{id}/delete
    GET  /admin/users?q=&page=         a page of users, filtered by a name substring
    POST /admin/users/{id}/status      is_active and/or is_superuser, each "true" or "false"
    POST /admin/users/{id}/roles       role_id, repeated: the user's complete role set
    POST /admin/users/{id}/revoke      end every session of the user

The user actions carry a hidden ``back`` field (the listing with its search and page) to return to.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel
from tornado.routing import Rule
from tornado.web import Finish

from repositories.errors import DomainError
from repositories.menus import MenuNode, MenuRepository
from repositories.models import Menu, Role
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from schemas.admin_user import UserRoles, UserStatusUpdate
from schemas.menu import MenuCreate, MenuUpdate
from schemas.role import RoleCreate, RoleMenus, RolePermissions, RoleUpdate
from schemas.text import Joined, Text, ntext
from server.admin import Admin, Refused
from server.handlers.base import FormError, PageHandler, validate_form
from server.permissions import (
    MENUS_CHANGE,
    MENUS_VIEW,
    PERMISSIONS,
    ROLES_CHANGE,
    ROLES_VIEW,
    SESSIONS_REVOKE,
    USERS_ASSIGN,
    USERS_CHANGE,
    USERS_VIEW,
    route,
)
from server.principal import Principal

ModelT = TypeVar("ModelT", bound=BaseModel)

MENUS_URL = "/admin/menus"
ROLES_URL = "/admin/roles"
USERS_URL = "/admin/users"
ID = r"(?P<item_id>[0-9]{1,10})"
PAGE_SIZE = 20
MAX_SEARCH = 32


@dataclass(frozen=True, slots=True)
class MenuOption:
    """A menu as a choice in a flat list: a parent ``<select>`` or a role's checklist."""

    id: int
    title: str
    depth: int
    ancestors: frozenset[int] = frozenset()
    """Ids of the menus above it: a menu cannot move under itself or its descendants."""
    title_key: str | None = None
    """A built-in menu's title as a message id (templates show ``menu_title(option)``)."""


@dataclass(frozen=True, slots=True)
class RoleRow:
    """A role as the admin pages show it."""

    id: int
    name: str
    description: str | None
    """As the reader sees it: a built-in role's in their language, else as typed."""
    menu_ids: frozenset[int] = frozenset()
    permissions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as the users page shows them."""

    id: int
    name: str
    is_active: bool
    is_superuser: bool
    role_ids: frozenset[int] = frozenset()


MENU_AUDIENCES = (
    ("all", Text("Everyone")),
    ("visitors", Text("Visitors only (not logged in)")),
    ("members", Text("Logged-in users only")),
)
"""The audience choices of the menu forms: value and label."""


@dataclass(frozen=True, slots=True)
class MenuForm:
    """What was typed into a menu form, shown again when the change is refused."""

    title: str = ""
    url: str = ""
    note: str = ""
    parent_id: str = ""
    permission: str = ""
    audience: str = "all"
    visible: bool = True
    menu_id: int | None = None
    """The menu an edit form belongs to; None for the create form."""


class Unchanged(Exception):
    """The form asked for nothing new; ``message`` says so."""

    def __init__(self, message: Text) -> None:
        super().__init__(str(message))
        self.message = message


def menu_options(tree: Sequence[MenuNode]) -> list[MenuOption]:
    """The tree flattened in display order (depth first), each menu with its depth and ancestors.

    Iterative, so an arbitrarily deep tree cannot exhaust the interpreter's recursion limit.
    """
    options: list[MenuOption] = []
    stack: list[tuple[MenuNode, tuple[int, ...]]] = [(node, ()) for node in reversed(tree)]
    while stack:
        node, ancestors = stack.pop()
        options.append(
            MenuOption(node.id, node.title, len(ancestors), frozenset(ancestors), node.title_key)
        )
        below = (*ancestors, node.id)
        stack.extend((child, below) for child in reversed(node.children))
    return options


def changed(current: object, wanted: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``wanted`` that differ from ``current``'s attributes."""
    return {name: value for name, value in wanted.items() if getattr(current, name) != value}


class AdminPageHandler(PageHandler):
    """Shared by the admin pages and their form actions: the actor and post/redirect/get."""

    back_url: str = "/"
    """Where an action returns to."""

    @property
    def actor(self) -> Principal:
        """The logged-in user (``prepare`` has already refused anyone else)."""
        if self.current_user is None:
            self.login_required()
        return self.current_user

    def field(self, name: str) -> str:
        """A form field, stripped ("" when absent)."""
        return self.get_body_argument(name, "") or ""

    def optional(self, name: str) -> str | None:
        """A form field, None when empty."""
        return self.field(name) or None

    def checked(self, name: str) -> bool:
        """True when the checkbox ``name`` was submitted."""
        return bool(self.field(name))

    def shown_title(self, menu: Menu | MenuNode) -> str:
        """The title the reader sees: a built-in menu's in their language, else as typed."""
        return self.locale.translate(menu.title_key) if menu.title_key else menu.title

    def shown_description(self, role: Role) -> str | None:
        """The description the reader sees: a built-in role's in their language, else as
        typed."""
        if role.description_key:
            return self.locale.translate(role.description_key)
        return role.description

    async def apply(
        self,
        change: Callable[[Admin], Awaitable[Text | Joined]],
        *,
        keep: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> NoReturn:
        """Run ``change``, flash its message or the reason it was refused, and redirect back.

        A refusal rolls back first: the redirect is a success status, so without the rollback
        the transaction would commit whatever ``change`` wrote before it was refused. With
        ``keep``, a refusal is not redirected: whatever the refusal recorded is committed, then
        ``keep(reason, status)`` renders the form again with what was typed.
        """
        admin = Admin(self.db, self.actor, client_ip=self.request.remote_ip)
        try:
            message = await change(admin)
        except (DomainError, FormError) as error:
            await self.db.rollback()
            if isinstance(error, Refused):
                await admin.record_refusal(error)  # committed with the redirect, or below
            if keep is None:
                self.flash(error.message, level="error")
            else:
                await self.db.commit()
                status = error.status if isinstance(error, DomainError) else 422
                await keep(self.text(error.message), status)
                raise Finish from None
        except Unchanged as unchanged:
            await self.db.rollback()
            self.flash(unchanged.message, level="info")
        else:
            self.publish_after_commit(*admin.events)
            self.flash(message.translate(self.locale.translate))  # a Joined list, too
        self.redirect_to(self.back_url)


# -- menus -------------------------------------------------------------------------------------


async def last_sort(menus: MenuRepository, parent_id: int | None, *, without: int = 0) -> int:
    """A sort key that places a menu after every child of ``parent_id`` (except ``without``)."""
    sorts = [
        menu.sort
        for menu in await menus.list()
        if menu.parent_id == parent_id and menu.id != without
    ]
    return max(sorts) + 1 if sorts else 0


class MenuEditorHandler(AdminPageHandler):
    """Renders the menu editor: the page itself, and again after a refused create or update."""

    back_url = MENUS_URL

    async def render_editor(
        self, *, typed: MenuForm | None = None, refusal: str | None = None, status: int = 200
    ) -> None:
        """Render ``admin/menus.html``: the tree (each node with the roles granting it) and
        ``typed`` in the form it came from, with ``refusal`` as an error message."""
        tree = await MenuRepository(self.db).get_tree()
        roles = RoleRepository(self.db)
        listed = await roles.list()
        grants = await roles.menu_ids_by_role(role.id for role in listed)
        granted_by: dict[int, list[str]] = {}
        for role in listed:
            for granted in sorted(grants.get(role.id, ())):
                granted_by.setdefault(granted, []).append(role.name)
        self.set_status(status)
        await self.render_page(
            "admin/menus.html",
            tree=tree,
            options=menu_options(tree),
            permissions=list(PERMISSIONS.values()),
            audiences=MENU_AUDIENCES,
            granted_by=granted_by,
            typed=typed,
            **({"flash": {"level": "error", "text": refusal}} if refusal is not None else {}),
        )

    def typed_form(self, menu_id: int | None) -> MenuForm:
        """What was posted to a create (``menu_id`` None) or update form, as typed."""
        return MenuForm(
            title=self.field("title"),
            url=self.field("url"),
            note=self.field("note"),
            parent_id=self.field("parent_id"),
            permission=self.field("permission"),
            audience=self.field("audience") or "all",
            visible=self.checked("visible"),
            menu_id=menu_id,
        )

    def keep_typed(self, menu_id: int | None) -> Callable[[str, int], Awaitable[None]]:
        """A ``keep`` for ``apply``: the editor again, with the form as typed."""

        async def keep(refusal: str, status: int) -> None:
            await self.render_editor(typed=self.typed_form(menu_id), refusal=refusal, status=status)

        return keep


class MenusPageHandler(MenuEditorHandler):
    """``GET /admin/menus``: the whole tree, each node compact (title, url, the roles granting
    it) with its edit, move and delete forms behind a button, and a form to create a menu."""

    async def get(self) -> None:
        """Render ``admin/menus.html``."""
        await self.render_editor()


FORM_BOOLEANS = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
"""How a submitted flag reads; anything else stays text and fails validation."""


class MenuCreateHandler(MenuEditorHandler):
    """``POST /admin/menus/create``: a new menu, last among its siblings."""

    async def post(self) -> None:
        """Create the menu and return to the editor (or show the form again, as typed)."""
        await self.apply(self.create, keep=self.keep_typed(None))

    async def create(self, admin: Admin) -> Text:
        """Validate the form and create the menu."""
        form = validate_form(
            MenuCreate,
            {
                "title": self.field("title"),
                "url": self.optional("url"),
                "note": self.optional("note"),
                "parent_id": self.optional("parent_id"),
                "visible": self.checked("visible"),
                "permission": self.optional("permission"),
                "audience": self.field("audience") or "all",
            },
        )
        fields = form.model_dump()
        fields["sort"] = await last_sort(admin.menus, form.parent_id)
        menu = await admin.create_menu(fields)
        return Text("Created the menu “{title}”", title=self.shown_title(menu))


class MenuActionHandler(MenuEditorHandler):
    """``POST /admin/menus/{id}/(update|move|reorder|delete)``: change one menu."""

    async def post(self, item_id: str, action: str) -> None:
        """Apply ``action`` to the menu and return to the editor."""
        menu_id = int(item_id)
        actions = {
            "update": self.update,
            "move": self.move,
            "reorder": self.reorder,
            "delete": self.delete_menu,
        }
        perform = actions[action]
        keep = self.keep_typed(menu_id) if action == "update" else None
        await self.apply(lambda admin: perform(admin, menu_id), keep=keep)

    async def update(self, admin: Admin, menu_id: int) -> Text:
        """Rename, re-link, annotate, show or hide the menu.

        A built-in menu's form shows its title in the reader's language; sent back unchanged,
        it is no rename (which would store the translation and drop the message id)."""
        form = validate_form(
            MenuUpdate,
            {
                "title": self.field("title"),
                "url": self.optional("url"),
                "note": self.optional("note"),
                "visible": self.checked("visible"),
                "permission": self.optional("permission"),
                "audience": self.field("audience") or "all",
            },
        )
        menu = await admin.menus.get(menu_id)
        wanted = form.model_dump(exclude_unset=True)
        if menu.title_key and wanted.get("title") == self.shown_title(menu):
            del wanted["title"]
        changes = changed(menu, wanted)
        if not changes:
            raise Unchanged(Text("The menu “{title}” is unchanged", title=self.shown_title(menu)))
        menu = await admin.update_menu(menu_id, changes)
        return Text("Saved the menu “{title}”", title=self.shown_title(menu))

    async def move(self, admin: Admin, menu_id: int) -> Text:
        """Move the menu under another parent (or to the top level), last among its siblings."""
        form = validate_form(MenuUpdate, {"parent_id": self.optional("parent_id")})
        menu = await admin.menus.get(menu_id)
        if form.parent_id == menu.parent_id:
            raise Unchanged(
                Text("The menu “{title}” is already there", title=self.shown_title(menu))
            )
        sort = await last_sort(admin.menus, form.parent_id, without=menu_id)
        menu = await admin.update_menu(menu_id, {"parent_id": form.parent_id, "sort": sort})
        if form.parent_id is None:
            return Text("Moved the menu “{title}” to the top level", title=self.shown_title(menu))
        parent = await admin.menus.get(form.parent_id)
        return Text(
            "Moved the menu “{title}” under “{parent}”",
            title=self.shown_title(menu),
            parent=self.shown_title(parent),
        )

    async def reorder(self, admin: Admin, menu_id: int) -> Text:
        """Trade places with the previous (``up``) or next (``down``) sibling."""
        direction = self.field("direction")
        if direction not in ("up", "down"):
            reason = Text("{field}: {reason}", field="direction", reason=Text("must be up or down"))
            raise FormError(Text("The input is not valid ({reasons})", reasons=reason))
        menu = await admin.menus.get(menu_id)
        title = self.shown_title(menu)
        siblings = [item for item in await admin.menus.list() if item.parent_id == menu.parent_id]
        index = next(position for position, item in enumerate(siblings) if item.id == menu_id)
        other = index - 1 if direction == "up" else index + 1
        if not 0 <= other < len(siblings):
            if direction == "up":
                raise Unchanged(Text("The menu “{title}” is already first", title=title))
            raise Unchanged(Text("The menu “{title}” is already last", title=title))
        await swap_places(admin, siblings, index, other)
        if direction == "up":
            return Text("Moved the menu “{title}” up", title=title)
        return Text("Moved the menu “{title}” down", title=title)

    async def delete_menu(self, admin: Admin, menu_id: int) -> Text:
        """Delete the menu; with ``cascade`` its subtree too (otherwise a parent is refused)."""
        menu = await admin.menus.get(menu_id)
        title = self.shown_title(menu)
        deleted = await admin.delete_menu(menu_id, cascade=self.checked("cascade"))
        below = len(deleted) - 1
        if not below:
            return Text("Deleted the menu “{title}”", title=title)
        return ntext(
            "Deleted the menu “{title}” and its {count} submenu",
            "Deleted the menu “{title}” and its {count} submenus",
            below,
            title=title,
        )


async def swap_places(admin: Admin, siblings: Sequence[Menu], index: int, other: int) -> None:
    """Exchange the positions of ``siblings[index]`` and ``siblings[other]``.

    Distinct sort keys are swapped; equal ones (ties are broken by id) cannot express the new
    order, so the whole sibling group is renumbered 0..n-1 in the wanted order instead.
    """
    first, second = siblings[index], siblings[other]
    if first.sort != second.sort:
        first_sort, second_sort = first.sort, second.sort
        await admin.update_menu(first.id, {"sort": second_sort})
        await admin.update_menu(second.id, {"sort": first_sort})
        return
    order = list(siblings)
    order[index], order[other] = second, first
    for position, item in enumerate(order):
        if item.sort != position:
            await admin.update_menu(item.id, {"sort": position})


# -- roles -------------------------------------------------------------------------------------


class RolesPageHandler(AdminPageHandler):
    """``GET /admin/roles``: every role with its edit and delete forms and its menu checklist
    (every menu, indented by depth), and a form to create a role."""

    async def get(self) -> None:
        """Render ``admin/roles.html``."""
        roles = RoleRepository(self.db)
        listed = await roles.list()
        grants = await roles.menu_ids_by_role(role.id for role in listed)
        permissions = await roles.permissions_by_role(role.id for role in listed)
        rows = [
            RoleRow(
                role.id,
                role.name,
                self.shown_description(role),
                frozenset(grants.get(role.id, ())),
                frozenset(permissions.get(role.id, ())),
            )
            for role in listed
        ]
        tree = await MenuRepository(self.db).get_tree()
        await self.render_page(
            "admin/roles.html",
            roles=rows,
            options=menu_options(tree),
            permissions=list(PERMISSIONS.values()),
        )


class RoleCreateHandler(AdminPageHandler):
    """``POST /admin/roles/create``: a new role that grants nothing yet."""

    back_url = ROLES_URL

    async def post(self) -> None:
        """Create the role and return to the roles page."""
        await self.apply(self.create)

    async def create(self, admin: Admin) -> Text:
        """Validate the form and create the role."""
        form = validate_form(
            RoleCreate, {"name": self.field("name"), "description": self.optional("description")}
        )
        role = await admin.create_role(form.name, form.description)
        return Text("Created the role “{name}”", name=role.name)


class RoleActionHandler(AdminPageHandler):
    """``POST /admin/roles/{id}/(update|menus|delete)``: change one role."""

    back_url = ROLES_URL

    async def post(self, item_id: str, action: str) -> None:
        """Apply ``action`` to the role and return to the roles page."""
        role_id = int(item_id)
        actions = {
            "update": self.update,
            "menus": self.set_menus,
            "permissions": self.set_permissions,
            "delete": self.delete_role,
        }
        perform = actions[action]
        await self.apply(lambda admin: perform(admin, role_id))

    async def update(self, admin: Admin, role_id: int) -> Text:
        """Rename or describe the role.

        A built-in role's form shows its description in the reader's language; sent back
        unchanged, it is no new description (which would store the translation and drop the
        message id)."""
        form = validate_form(
            RoleUpdate, {"name": self.field("name"), "description": self.optional("description")}
        )
        role = await admin.roles.get(role_id)
        wanted = form.model_dump(exclude_unset=True)
        if role.description_key and wanted.get("description") == self.shown_description(role):
            del wanted["description"]
        changes = changed(role, wanted)
        if not changes:
            raise Unchanged(Text("The role “{name}” is unchanged", name=role.name))
        role = await admin.update_role(role_id, changes)
        return Text("Saved the role “{name}”", name=role.name)

    async def set_menus(self, admin: Admin, role_id: int) -> Text:
        """Replace the role's menus with the checked ones."""
        form = validate_form(RoleMenus, {"menu_ids": self.get_body_arguments("menu_id")})
        role = await admin.roles.get(role_id)
        granted = await admin.set_role_menus(role_id, form.menu_ids)
        return ntext(
            "The role “{name}” now grants {count} menu",
            "The role “{name}” now grants {count} menus",
            len(granted),
            name=role.name,
        )

    async def set_permissions(self, admin: Admin, role_id: int) -> Text:
        """Replace the role's permissions with the checked ones."""
        form = validate_form(
            RolePermissions, {"permissions": self.get_body_arguments("permission")}
        )
        role = await admin.roles.get(role_id)
        granted = await admin.set_role_permissions(role_id, form.permissions)
        return ntext(
            "The role “{name}” now grants {count} permission",
            "The role “{name}” now grants {count} permissions",
            len(granted),
            name=role.name,
        )

    async def delete_role(self, admin: Admin, role_id: int) -> Text:
        """Delete the role; its holders lose its grants."""
        role = await admin.roles.get(role_id)
        name = role.name
        await admin.delete_role(role_id)
        return Text("Deleted the role “{name}”", name=name)


# -- users -------------------------------------------------------------------------------------


def users_page_url(q: str, page: int) -> str:
    """The users listing for search ``q`` at ``page``."""
    query = {key: value for key, value in (("q", q), ("page", str(page))) if value and value != "1"}
    return f"{USERS_URL}?{urlencode(query)}" if query else USERS_URL


class UsersPageHandler(AdminPageHandler):
    """``GET /admin/users?q=&page=``: a page of users with their status and role forms."""

    async def get(self) -> None:
        """Render ``admin/users.html``."""
        q = self.get_query_argument("q", "").strip()[:MAX_SEARCH]
        raw_page = self.get_query_argument("page", "1")
        requested = int(raw_page) if raw_page.isdigit() and len(raw_page) <= 6 else 1
        users = UserRepository(self.db)
        count = await users.count(name_contains=q or None)
        pages = max(1, math.ceil(count / PAGE_SIZE))
        page = min(max(requested, 1), pages)
        listed = await users.list(
            offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, name_contains=q or None
        )
        held = await users.role_ids_by_user(user.id for user in listed)
        rows = [
            UserRow(
                user.id,
                user.name,
                user.is_active,
                user.is_superuser,
                frozenset(held.get(user.id, ())),
            )
            for user in listed
        ]
        roles = [
            RoleRow(role.id, role.name, self.shown_description(role))
            for role in await RoleRepository(self.db).list()
        ]
        await self.render_page(
            "admin/users.html",
            users=rows,
            roles=roles,
            q=q,
            count=count,
            page=page,
            pages=pages,
            back=users_page_url(q, page),
            prev_url=users_page_url(q, page - 1) if page > 1 else None,
            next_url=users_page_url(q, page + 1) if page < pages else None,
        )


class UserActionHandler(AdminPageHandler):
    """``POST /admin/users/{id}/(status|roles|revoke)``: change one user."""

    async def post(self, item_id: str, action: str) -> None:
        """Apply ``action`` to the user and return to the listing the form came from."""
        back = self.field("back")
        if back == USERS_URL or back.startswith(USERS_URL + "?"):
            self.back_url = back
        else:
            self.back_url = USERS_URL
        user_id = int(item_id)
        actions = {"status": self.set_status_flags, "roles": self.set_roles, "revoke": self.revoke}
        perform = actions[action]
        await self.apply(lambda admin: perform(admin, user_id))

    async def set_status_flags(self, admin: Admin, user_id: int) -> Text | Joined:
        """Activate or deactivate (which ends their sessions), promote or demote."""
        submitted = {
            name: FORM_BOOLEANS.get(self.field(name).lower(), self.field(name))
            for name in ("is_active", "is_superuser")
            if self.get_body_argument(name, None) is not None
        }
        form = validate_form(UserStatusUpdate, submitted)
        user = await admin.users.get(user_id)
        changes = changed(user, form.model_dump(exclude_unset=True))
        if not changes:
            raise Unchanged(Text("The user “{name}” is unchanged", name=user.name))
        user = await admin.update_user(user_id, changes)
        done: list[Text | str] = []
        if "is_active" in changes:
            if user.is_active:
                done.append(Text("User “{name}”: activated", name=user.name))
            else:
                done.append(Text("User “{name}”: deactivated", name=user.name))
        if "is_superuser" in changes:
            if user.is_superuser:
                done.append(Text("User “{name}”: made a superuser", name=user.name))
            else:
                done.append(Text("User “{name}”: no longer a superuser", name=user.name))
        return Joined(done)

    async def set_roles(self, admin: Admin, user_id: int) -> Text:
        """Replace the user's roles with the checked ones."""
        form = validate_form(UserRoles, {"role_ids": self.get_body_arguments("role_id")})
        user = await admin.users.get(user_id)
        held = await admin.set_user_roles(user_id, form.role_ids)
        return ntext(
            "The user “{name}” now has {count} role",
            "The user “{name}” now has {count} roles",
            len(held),
            name=user.name,
        )

    async def revoke(self, admin: Admin, user_id: int) -> Text:
        """End every session of the user."""
        user = await admin.users.get(user_id)
        revoked = await admin.revoke_user_sessions(user_id)
        return ntext(
            "Ended {count} session of the user “{name}”",
            "Ended {count} sessions of the user “{name}”",
            revoked,
            name=user.name,
        )


def admin_page_routes(deps: dict[str, Any]) -> list[Rule]:
    """The routes of this module (the URL design is in the module docstring), each with the
    permission it needs."""
    return [
        route(MENUS_URL, MenusPageHandler, deps, name="admin-menus", need=MENUS_VIEW),
        route(
            rf"{MENUS_URL}/create",
            MenuCreateHandler,
            deps,
            name="admin-menu-create",
            need=MENUS_CHANGE,
        ),
        route(
            rf"{MENUS_URL}/{ID}/(?P<action>update|move|reorder|delete)",
            MenuActionHandler,
            deps,
            name="admin-menu-action",
            need=MENUS_CHANGE,
        ),
        route(ROLES_URL, RolesPageHandler, deps, name="admin-roles", need=ROLES_VIEW),
        route(
            rf"{ROLES_URL}/create",
            RoleCreateHandler,
            deps,
            name="admin-role-create",
            need=ROLES_CHANGE,
        ),
        route(
            rf"{ROLES_URL}/{ID}/(?P<action>update|menus|permissions|delete)",
            RoleActionHandler,
            deps,
            name="admin-role-action",
            need=ROLES_CHANGE,
        ),
        route(USERS_URL, UsersPageHandler, deps, name="admin-users", need=USERS_VIEW),
        route(
            rf"{USERS_URL}/{ID}/(?P<action>status)",
            UserActionHandler,
            deps,
            name="admin-user-status",
            need=USERS_CHANGE,
        ),
        route(
            rf"{USERS_URL}/{ID}/(?P<action>roles)",
            UserActionHandler,
            deps,
            name="admin-user-roles",
            need=USERS_ASSIGN,
        ),
        route(
            rf"{USERS_URL}/{ID}/(?P<action>revoke)",
            UserActionHandler,
            deps,
            name="admin-user-revoke",
            need=SESSIONS_REVOKE,
        ),
    ]

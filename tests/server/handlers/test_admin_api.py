"""The administration API (/api/menus, /api/roles, /api/users) and /user/me/menus: who may call
it, what it changes, every way it refuses, and how fast its changes reach the caches."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from repositories.audit import AuditRepository
from repositories.menus import MenuRepository
from repositories.models import AuthToken, Menu, role_menu
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from server.app import make_app
from server.invalidation import Event
from server.permissions import (
    ADMIN_PERMISSIONS,
    AUDIT_VIEW,
    MENUS_VIEW,
    PERMISSIONS,
    ROLES_CHANGE,
    ROLES_VIEW,
    USERS_CHANGE,
    USERS_VIEW,
)
from server.services import Services, open_services
from tests.conftest import Client, Response, make_settings, serve_app, service_url
from tests.server.handlers.test_user import PASSWORD, bearer, login, make_superuser, register

NO_SUCH_ID = 2**31 - 1
ADMIN_API_PREFIXES = ("/api/menus", "/api/roles", "/api/users")
ADMIN_MENUS = {"/admin/menus": MENUS_VIEW, "/admin/roles": ROLES_VIEW, "/admin/users": USERS_VIEW}
"""The admin pages' menus and the permission each names (it decides who sees the link, and
nothing else: access comes from the permission)."""

# -- helpers ---------------------------------------------------------------------------------


async def superuser_token(client: Client, services: Services, name: str = "root") -> str:
    """Register ``name``, make them a superuser, and log them in."""
    await register(client, name)
    await make_superuser(services, name)
    return await login(client, name)


async def member_token(client: Client, name: str) -> str:
    """Register and log in a user with no roles."""
    await register(client, name)
    return await login(client, name)


async def user_id(services: Services, name: str) -> int:
    async with services.sessions() as session:
        user = await UserRepository(session).get_by_name(name)
    assert user is not None
    return user.id


async def add_menus(services: Services, *specs: dict[str, Any]) -> list[int]:
    """Create menus straight in the database (a spec's ``parent`` is an index into ``specs``)."""
    ids: list[int] = []
    async with services.sessions() as session, session.begin():
        menus = MenuRepository(session)
        for spec in specs:
            fields = dict(spec)
            parent = fields.pop("parent", None)
            menu = await menus.add(**fields, parent_id=None if parent is None else ids[parent])
            ids.append(menu.id)
    await services.invalidation.publish(Event("menus"))
    return ids


async def add_admin_menus(services: Services) -> dict[str, int]:
    """An "Admin" root with one child per admin page, each naming the permission its page
    needs; their ids keyed by url."""
    specs: list[dict[str, Any]] = [{"title": "Admin"}]
    specs += [
        {"title": url.rsplit("/", 1)[-1], "url": url, "permission": need, "parent": 0}
        for url, need in ADMIN_MENUS.items()
    ]
    ids = await add_menus(services, *specs)
    return dict(zip(ADMIN_MENUS, ids[1:], strict=True))


async def add_role(
    services: Services,
    name: str,
    menu_ids: Iterable[int],
    holders: Iterable[str] = (),
    permissions: Iterable[str] = (),
) -> int:
    """A role granting ``menu_ids`` and ``permissions``, given to the users named ``holders``."""
    async with services.sessions() as session, session.begin():
        roles = RoleRepository(session)
        role = await roles.add(name=name)
        await roles.set_menus(role.id, menu_ids)
        await roles.set_permissions(role.id, permissions)
        users = UserRepository(session)
        for holder in holders:
            user = await users.get_by_name(holder)
            assert user is not None
            await users.set_roles(user.id, {*await users.role_ids(user.id), role.id})
        role_id = role.id
    await services.invalidation.publish(Event("all"))
    return role_id


async def audit_actions(services: Services) -> list[str]:
    """Every audited action, oldest first."""
    async with services.sessions() as session:
        return [entry.action for entry in reversed(await AuditRepository(session).list())]


def titles(nodes: list[dict[str, Any]]) -> list[Any]:
    """The titles of a JSON menu forest, nested like it."""
    return [
        (node["title"], titles(node["children"])) if node["children"] else node["title"]
        for node in nodes
    ]


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert set(body) == {"msg", "code", "errors"}
    return body


def error_fields(response: Response) -> set[str]:
    assert response.status == 422, response.text
    return {item["field"] for item in response.json()["errors"]}


@pytest.fixture
async def root(client: Client, services: Services) -> str:
    """The token of the superuser "root"."""
    return await superuser_token(client, services)


# -- who may call what -------------------------------------------------------------------------

ADMIN_CALLS: list[tuple[str, str, Any]] = [
    ("GET", "/api/menus", None),
    ("POST", "/api/menus", {"title": "x"}),
    ("GET", "/api/menus/1", None),
    ("PATCH", "/api/menus/1", {"title": "x"}),
    ("DELETE", "/api/menus/1", None),
    ("GET", "/api/roles", None),
    ("POST", "/api/roles", {"name": "x"}),
    ("GET", "/api/roles/1", None),
    ("PATCH", "/api/roles/1", {"name": "x"}),
    ("DELETE", "/api/roles/1", None),
    ("PUT", "/api/roles/1/menus", {"menu_ids": []}),
    ("PUT", "/api/roles/1/permissions", {"permissions": []}),
    ("GET", "/api/users", None),
    ("GET", "/api/users/1", None),
    ("PATCH", "/api/users/1", {"is_active": False}),
    ("PUT", "/api/users/1/roles", {"role_ids": []}),
    ("DELETE", "/api/users/1/sessions", None),
]
CALL_IDS = [f"{method} {path}" for method, path, _ in ADMIN_CALLS]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=CALL_IDS)
async def test_anonymous_callers_are_401_on_every_admin_route(
    client: Client, services: Services, method: str, path: str, body: Any
) -> None:
    await add_admin_menus(services)
    response = await client.request(method, path, json_body=body)
    assert_error(response, 401, "not_authenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=CALL_IDS)
async def test_a_user_without_the_permission_is_403_and_changes_nothing(
    client: Client, services: Services, method: str, path: str, body: Any
) -> None:
    menus = await add_admin_menus(services)
    token = await member_token(client, "cxk")
    role = await add_role(services, "sees-every-admin-menu", menus.values(), ["cxk"])
    response = await client.request(method, path, json_body=body, headers=bearer(token))
    assert_error(response, 403, "permission_required")
    assert await audit_actions(services) == ["register", "login"]
    async with services.sessions() as session:
        assert await MenuRepository(session).count() == 1 + len(ADMIN_MENUS)
        assert await UserRepository(session).role_ids(await user_id(services, "cxk")) == {role}
        assert await RoleRepository(session).permissions(role) == set()


async def test_an_admin_of_roles_only_uses_roles_but_is_403_on_menus_and_users(
    client: Client, services: Services
) -> None:
    menus = await add_admin_menus(services)
    token = await member_token(client, "rita")
    await add_role(
        services, "role-admins", [menus["/admin/roles"]], ["rita"], [ROLES_VIEW, ROLES_CHANGE]
    )
    assert (await client.get("/api/roles", headers=bearer(token))).status == 200
    created = await client.post("/api/roles", json_body={"name": "new"}, headers=bearer(token))
    assert created.status == 201, created.text
    for path in ("/api/menus", "/api/menus?flat=1", "/api/users", "/api/users/1"):
        assert_error(await client.get(path, headers=bearer(token)), 403, "permission_required")
    refused = await client.post("/api/menus", json_body={"title": "x"}, headers=bearer(token))
    assert_error(refused, 403, "permission_required")


async def test_a_403_names_the_missing_permission(client: Client, services: Services) -> None:
    token = await member_token(client, "cxk")
    body = assert_error(
        await client.get("/api/users", headers=bearer(token)), 403, "permission_required"
    )
    assert USERS_VIEW in body["msg"]


async def test_an_invalid_token_is_401_not_403(client: Client, services: Services) -> None:
    await add_admin_menus(services)
    response = await client.get("/api/menus", headers=bearer("not-a-token"))
    assert_error(response, 401, "invalid_token")


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/menus", "GET, POST"),
        ("/api/menus/1", "GET, PATCH, DELETE"),
        ("/api/roles/1/menus", "PUT"),
        ("/api/users/1/sessions", "DELETE"),
        ("/user/me/menus", "GET"),
    ],
)
async def test_a_cors_preflight_needs_no_credentials_but_grants_nothing(
    client: Client, services: Services, path: str, methods: str
) -> None:
    await add_admin_menus(services)
    cors = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    preflight = await client.request("OPTIONS", path, headers=cors)
    assert preflight.status == 204, preflight.text
    assert preflight.headers["Access-Control-Allow-Methods"] == methods
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert_error(await client.get(path, headers=cors), 401, "not_authenticated")


async def test_my_menus_needs_a_login(client: Client) -> None:
    assert_error(await client.get("/user/me/menus"), 401, "not_authenticated")


# -- menus -------------------------------------------------------------------------------------


async def test_a_superuser_creates_reads_changes_and_deletes_a_menu(
    client: Client, services: Services, root: str
) -> None:
    auth = bearer(root)
    created = await client.post(
        "/api/menus",
        json_body={"title": "Reports", "url": "/reports", "note": "monthly", "sort": 2},
        headers=auth,
    )
    assert created.status == 201, created.text
    menu = created.json()["menu"]
    assert menu == {
        "id": menu["id"],
        "title": "Reports",
        "url": "/reports",
        "note": "monthly",
        "parent_id": None,
        "sort": 2,
        "visible": True,
        "permission": None,
        "audience": "all",
    }
    path = f"/api/menus/{menu['id']}"
    assert (await client.get(path, headers=auth)).json()["menu"] == menu

    changed = await client.request(
        "PATCH", path, json_body={"title": "Monthly reports", "visible": False}, headers=auth
    )
    assert changed.status == 200, changed.text
    assert changed.json()["menu"] == {**menu, "title": "Monthly reports", "visible": False}

    deleted = await client.request("DELETE", path, headers=auth)
    assert deleted.json() == {"msg": "success", "deleted": [menu["id"]]}
    assert_error(await client.get(path, headers=auth), 404, "menu_not_found")


async def test_a_menus_audience_is_set_changed_and_validated(client: Client, root: str) -> None:
    auth = bearer(root)
    created = await client.post(
        "/api/menus",
        json_body={"title": "注册", "url": "/signup", "audience": "visitors"},
        headers=auth,
    )
    assert created.status == 201, created.text
    menu = created.json()["menu"]
    assert menu["audience"] == "visitors"
    path = f"/api/menus/{menu['id']}"
    changed = await client.request("PATCH", path, json_body={"audience": "members"}, headers=auth)
    assert changed.json()["menu"]["audience"] == "members"
    tree = (await client.get("/api/menus", headers=auth)).json()["menus"]
    assert [node["audience"] for node in tree if node["id"] == menu["id"]] == ["members"]
    for wrong in ("everyone", None):
        refused = await client.request("PATCH", path, json_body={"audience": wrong}, headers=auth)
        assert_error(refused, 422, "validation_error")
    assert_error(
        await client.post("/api/menus", json_body={"title": "x", "audience": "all "}, headers=auth),
        422,
        "validation_error",
    )


async def test_patch_changes_only_the_fields_sent_and_null_parent_makes_a_root(
    client: Client, services: Services, root: str
) -> None:
    parent, child = await add_menus(
        services,
        {"title": "Parent"},
        {"title": "Child", "url": "/child", "note": "keep me", "sort": 7, "parent": 0},
    )
    path = f"/api/menus/{child}"
    noted = await client.request("PATCH", path, json_body={"sort": 1}, headers=bearer(root))
    assert noted.json()["menu"] == {
        "id": child,
        "title": "Child",
        "url": "/child",
        "note": "keep me",
        "parent_id": parent,
        "sort": 1,
        "visible": True,
        "permission": None,
        "audience": "all",
    }
    cleared = await client.request(
        "PATCH",
        path,
        json_body={"parent_id": None, "url": None, "note": None},
        headers=bearer(root),
    )
    menu = cleared.json()["menu"]
    assert (menu["parent_id"], menu["url"], menu["note"], menu["sort"]) == (None, None, None, 1)


async def test_get_menus_is_the_whole_tree_and_flat_1_a_flat_list(
    client: Client, services: Services, root: str
) -> None:
    ids = await add_menus(
        services,
        {"title": "Admin", "sort": 1},
        {"title": "Users", "url": "/admin/users", "parent": 0, "sort": 2},
        {"title": "Hidden", "url": "/admin/hidden", "parent": 0, "sort": 1, "visible": False},
        {"title": "Home", "url": "/home", "sort": 0},
    )
    for query in ("", "?flat=0", "?flat=false"):
        tree = await client.get(f"/api/menus{query}", headers=bearer(root))
        assert tree.status == 200, tree.text
        assert titles(tree.json()["menus"]) == ["Home", ("Admin", ["Hidden", "Users"])]
    for query in ("?flat=1", "?flat=true"):
        flat = (await client.get(f"/api/menus{query}", headers=bearer(root))).json()
        assert flat["count"] == 4
        assert [(item["id"], item["parent_id"]) for item in flat["items"]] == [
            (ids[3], None),
            (ids[0], None),
            (ids[2], ids[0]),
            (ids[1], ids[0]),
        ]


@pytest.mark.parametrize("value", ["yes", "2", "", "TRUE", "%201", "on"])
async def test_a_flat_value_other_than_0_1_true_false_is_422(
    client: Client, root: str, value: str
) -> None:
    response = await client.get(f"/api/menus?flat={value}", headers=bearer(root))
    assert error_fields(response) == {"flat"}


async def test_a_repeated_flat_is_422(client: Client, root: str) -> None:
    response = await client.get("/api/menus?flat=1&flat=0", headers=bearer(root))
    assert error_fields(response) == {"flat"}


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PATCH", {"title": "x"}), ("DELETE", None)]
)
@pytest.mark.parametrize("menu_id", ["0", str(NO_SUCH_ID), "9999999999"])
async def test_an_unknown_menu_id_is_404(
    client: Client, root: str, method: str, body: Any, menu_id: str
) -> None:
    response = await client.request(
        method, f"/api/menus/{menu_id}", json_body=body, headers=bearer(root)
    )
    assert_error(response, 404, "menu_not_found")


async def test_an_error_message_is_in_the_callers_language(client: Client, root: str) -> None:
    """Chinese without ``Accept-Language``, English when asked; the code never changes."""
    path = f"/api/menus/{NO_SUCH_ID}"
    chinese = assert_error(await client.get(path, headers=bearer(root)), 404, "menu_not_found")
    assert chinese["msg"] == f"菜单 {NO_SUCH_ID} 不存在"
    english = assert_error(
        await client.get(path, headers={**bearer(root), "Accept-Language": "en"}),
        404,
        "menu_not_found",
    )
    assert english["msg"] == f"menu {NO_SUCH_ID} does not exist"
    invalid = await client.post(
        "/api/menus",
        json_body={"title": "Shop", "url": "//elsewhere"},
        headers={**bearer(root), "Accept-Language": "en"},
    )
    assert assert_error(invalid, 422, "validation_error")["errors"] == [
        {"field": "url", "reason": "must be a local path starting with / (not //)"}
    ]


async def test_a_negative_or_non_numeric_menu_id_is_404(client: Client, root: str) -> None:
    for path in ("/api/menus/-1", "/api/menus/abc"):
        assert_error(await client.get(path, headers=bearer(root)), 404, "not_found")


async def test_an_unknown_parent_is_404_and_creates_nothing(
    client: Client, services: Services, root: str
) -> None:
    response = await client.post(
        "/api/menus", json_body={"title": "Orphan", "parent_id": NO_SUCH_ID}, headers=bearer(root)
    )
    assert_error(response, 404, "menu_not_found")
    async with services.sessions() as session:
        assert await MenuRepository(session).count() == 0


async def test_deleting_a_menu_with_children_is_409_without_cascade(
    client: Client, services: Services, root: str
) -> None:
    parent, _ = await add_menus(services, {"title": "Parent"}, {"title": "Child", "parent": 0})
    for query in ("", "?cascade=0", "?cascade=false"):
        response = await client.request(
            "DELETE", f"/api/menus/{parent}{query}", headers=bearer(root)
        )
        assert_error(response, 409, "menu_has_children")
    async with services.sessions() as session:
        assert await MenuRepository(session).count() == 2


@pytest.mark.parametrize("query", ["?cascade=1", "?cascade=true"])
async def test_cascade_deletes_the_subtree_and_its_grants(
    client: Client, services: Services, root: str, query: str
) -> None:
    parent, child, grandchild, other = await add_menus(
        services,
        {"title": "Parent", "url": "/p"},
        {"title": "Child", "url": "/p/c", "parent": 0},
        {"title": "Grandchild", "url": "/p/c/g", "parent": 1},
        {"title": "Other", "url": "/other"},
    )
    role = await add_role(services, "viewer", [parent, grandchild, other])
    response = await client.request("DELETE", f"/api/menus/{parent}{query}", headers=bearer(root))
    assert response.status == 200, response.text
    assert sorted(response.json()["deleted"]) == sorted([parent, child, grandchild])
    async with services.sessions() as session:
        assert await RoleRepository(session).menu_ids(role) == {other}
        grants = await session.scalar(select(func.count()).select_from(role_menu))
        assert grants == 1
    role_body = (await client.get(f"/api/roles/{role}", headers=bearer(root))).json()
    assert role_body["role"]["menu_ids"] == [other]


@pytest.mark.parametrize("value", ["yes", "2", "", "True", "1%20"])
async def test_a_cascade_value_other_than_0_1_true_false_is_422_and_deletes_nothing(
    client: Client, services: Services, root: str, value: str
) -> None:
    [menu] = await add_menus(services, {"title": "Alone"})
    response = await client.request(
        "DELETE", f"/api/menus/{menu}?cascade={value}", headers=bearer(root)
    )
    assert error_fields(response) == {"cascade"}
    async with services.sessions() as session:
        assert await MenuRepository(session).count() == 1


async def test_moving_a_menu_under_itself_or_its_descendant_is_409(
    client: Client, services: Services, root: str
) -> None:
    top, middle, bottom = await add_menus(
        services,
        {"title": "Top"},
        {"title": "Middle", "parent": 0},
        {"title": "Bottom", "parent": 1},
    )
    for new_parent in (top, middle, bottom):
        response = await client.request(
            "PATCH", f"/api/menus/{top}", json_body={"parent_id": new_parent}, headers=bearer(root)
        )
        assert_error(response, 409, "menu_cycle")
    moved = await client.request(
        "PATCH", f"/api/menus/{bottom}", json_body={"parent_id": top}, headers=bearer(root)
    )
    assert moved.json()["menu"]["parent_id"] == top


async def test_the_same_title_twice_under_one_parent_is_409(
    client: Client, services: Services, root: str
) -> None:
    first, second, _ = await add_menus(
        services, {"title": "One"}, {"title": "Two"}, {"title": "Reports", "parent": 0}
    )
    duplicate = await client.post(
        "/api/menus", json_body={"title": "Reports", "parent_id": first}, headers=bearer(root)
    )
    assert_error(duplicate, 409, "menu_title_taken")
    duplicate_root = await client.post(
        "/api/menus", json_body={"title": "One"}, headers=bearer(root)
    )
    assert_error(duplicate_root, 409, "menu_title_taken")
    elsewhere = await client.post(
        "/api/menus", json_body={"title": "Reports", "parent_id": second}, headers=bearer(root)
    )
    assert elsewhere.status == 201, elsewhere.text
    moved_into_clash = await client.request(
        "PATCH",
        f"/api/menus/{elsewhere.json()['menu']['id']}",
        json_body={"parent_id": first},
        headers=bearer(root),
    )
    assert_error(moved_into_clash, 409, "menu_title_taken")
    renamed_into_clash = await client.request(
        "PATCH", f"/api/menus/{second}", json_body={"title": "One"}, headers=bearer(root)
    )
    assert_error(renamed_into_clash, 409, "menu_title_taken")


async def test_the_same_url_twice_is_409(client: Client, services: Services, root: str) -> None:
    _, other = await add_menus(services, {"title": "A", "url": "/a"}, {"title": "B", "url": "/b"})
    created = await client.post(
        "/api/menus", json_body={"title": "C", "url": "/a"}, headers=bearer(root)
    )
    assert_error(created, 409, "menu_url_taken")
    changed = await client.request(
        "PATCH", f"/api/menus/{other}", json_body={"url": "/a"}, headers=bearer(root)
    )
    assert_error(changed, 409, "menu_url_taken")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "colour": "red"}, "colour"),
        ({"title": None}, "title"),
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "two\nlines"}, "title"),
        ({"title": "x", "url": "https://evil.example"}, "url"),
        ({"title": "x", "url": "//evil.example"}, "url"),
        ({"title": "x", "url": "/with space"}, "url"),
        ({"title": "x", "parent_id": -1}, "parent_id"),
        ({"title": "x", "parent_id": 0}, "parent_id"),
        ({"title": "x", "sort": 10**9}, "sort"),
        ({"title": "x", "visible": "maybe"}, "visible"),
    ],
)
async def test_an_invalid_new_menu_is_422_naming_the_field(
    client: Client, services: Services, root: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/menus", json_body=body, headers=bearer(root))
    assert field in error_fields(response)
    async with services.sessions() as session:
        assert await MenuRepository(session).count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": None},
        {"sort": None},
        {"visible": None},
        {"url": "https://evil.example"},
        {"parent_id": -3},
        {"id": 5},
        [],
    ],
)
async def test_an_invalid_menu_change_is_422(
    client: Client, services: Services, root: str, body: Any
) -> None:
    [menu] = await add_menus(services, {"title": "Kept", "url": "/kept"})
    response = await client.request(
        "PATCH", f"/api/menus/{menu}", json_body=body, headers=bearer(root)
    )
    assert response.status == 422, response.text
    kept = (await client.get(f"/api/menus/{menu}", headers=bearer(root))).json()["menu"]
    assert (kept["title"], kept["url"]) == ("Kept", "/kept")


async def test_a_menu_body_that_is_not_json_is_refused(client: Client, root: str) -> None:
    malformed = await client.post(
        "/api/menus",
        body="{not json",
        headers={**bearer(root), "Content-Type": "application/json"},
    )
    assert_error(malformed, 400, "malformed_json")
    form = await client.post(
        "/api/menus",
        body="title=x",
        headers={**bearer(root), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(form, 415, "unsupported_media_type")


# -- roles -------------------------------------------------------------------------------------


async def test_a_role_is_created_read_renamed_granted_and_deleted(
    client: Client, services: Services, root: str
) -> None:
    auth = bearer(root)
    first, second = await add_menus(services, {"title": "A", "url": "/a"}, {"title": "B"})
    created = await client.post(
        "/api/roles", json_body={"name": "editors", "description": "edit"}, headers=auth
    )
    assert created.status == 201, created.text
    role = created.json()["role"]
    assert role == {
        "id": role["id"],
        "name": "editors",
        "description": "edit",
        "menu_ids": [],
        "permissions": [],
    }
    path = f"/api/roles/{role['id']}"

    granted = await client.request(
        "PUT", f"{path}/menus", json_body={"menu_ids": [second, first, first]}, headers=auth
    )
    assert granted.status == 200, granted.text
    assert granted.json()["role"]["menu_ids"] == sorted([first, second])

    renamed = await client.request("PATCH", path, json_body={"name": "writers"}, headers=auth)
    assert renamed.json()["role"] == {
        **role,
        "name": "writers",
        "menu_ids": sorted([first, second]),
    }
    described = await client.request("PATCH", path, json_body={"description": None}, headers=auth)
    assert described.json()["role"]["description"] is None

    listed = (await client.get("/api/roles", headers=auth)).json()
    assert listed["count"] == 1
    assert listed["items"][0]["menu_ids"] == sorted([first, second])

    emptied = await client.request("PUT", f"{path}/menus", json_body={"menu_ids": []}, headers=auth)
    assert emptied.json()["role"]["menu_ids"] == []

    deleted = await client.request("DELETE", path, headers=auth)
    assert deleted.json() == {"msg": "success"}
    assert_error(await client.get(path, headers=auth), 404, "role_not_found")


async def test_a_superuser_replaces_the_permissions_a_role_grants(
    client: Client, services: Services, root: str
) -> None:
    role = await add_role(services, "staff", [], permissions=[USERS_VIEW])
    path = f"/api/roles/{role}/permissions"
    granted = await client.request(
        "PUT",
        path,
        json_body={"permissions": [USERS_CHANGE, ROLES_VIEW, USERS_CHANGE]},
        headers=bearer(root),
    )
    assert granted.status == 200, granted.text
    assert granted.json()["role"]["permissions"] == sorted([ROLES_VIEW, USERS_CHANGE])
    read = (await client.get(f"/api/roles/{role}", headers=bearer(root))).json()["role"]
    assert read["permissions"] == sorted([ROLES_VIEW, USERS_CHANGE])
    emptied = await client.request("PUT", path, json_body={"permissions": []}, headers=bearer(root))
    assert emptied.json()["role"]["permissions"] == []
    assert "role_permissions_set" in await audit_actions(services)


@pytest.mark.parametrize(
    "body", [{"permissions": ["users.everything"]}, {"permissions": "users.view"}, {}]
)
async def test_an_unknown_permission_code_is_422_and_grants_nothing(
    client: Client, services: Services, root: str, body: Any
) -> None:
    role = await add_role(services, "staff", [], permissions=[USERS_VIEW])
    response = await client.request(
        "PUT", f"/api/roles/{role}/permissions", json_body=body, headers=bearer(root)
    )
    assert response.status == 422, response.text
    async with services.sessions() as session:
        assert await RoleRepository(session).permissions(role) == {USERS_VIEW}


async def test_the_permission_registry_is_listed_for_any_logged_in_user(
    client: Client, services: Services
) -> None:
    token = await member_token(client, "cxk")
    listed = (await client.get("/api/permissions", headers=bearer(token))).json()
    assert [item["code"] for item in listed["items"]] == list(PERMISSIONS)
    assert listed["count"] == len(PERMISSIONS)
    assert all(item["meaning"] and item["meaning_zh"] for item in listed["items"])
    assert_error(await client.get("/api/permissions"), 401, "not_authenticated")


async def test_a_permissions_meaning_is_in_the_callers_language(client: Client) -> None:
    """``meaning`` follows the caller's language (Chinese by default); ``meaning_zh`` stays
    Chinese for clients written when ``meaning`` was always English."""
    token = await member_token(client, "cxk")

    async def meanings(**headers: str) -> tuple[str, str]:
        response = await client.get("/api/permissions", headers={**bearer(token), **headers})
        item = next(item for item in response.json()["items"] if item["code"] == AUDIT_VIEW)
        return item["meaning"], item["meaning_zh"]

    assert await meanings() == ("查看审计日志", "查看审计日志")
    assert await meanings(**{"Accept-Language": "en-US,en;q=0.9"}) == (
        "read the audit log",
        "查看审计日志",
    )


async def test_a_menu_naming_a_permission_is_shown_only_to_its_holders(
    client: Client, services: Services, root: str
) -> None:
    created = await client.post(
        "/api/menus",
        json_body={"title": "Users", "url": "/admin/users", "permission": USERS_VIEW},
        headers=bearer(root),
    )
    assert created.status == 201, created.text
    menu = created.json()["menu"]
    assert menu["permission"] == USERS_VIEW
    unknown = await client.post(
        "/api/menus", json_body={"title": "X", "permission": "users.all"}, headers=bearer(root)
    )
    assert error_fields(unknown) == {"permission"}
    viewer = await member_token(client, "vera")
    bystander = await member_token(client, "bob")
    await add_role(services, "viewers", [menu["id"]], ["vera"], [USERS_VIEW])
    await add_role(services, "menu-only", [menu["id"]], ["bob"])
    seen = (await client.get("/user/me/menus", headers=bearer(viewer))).json()["menus"]
    assert titles(seen) == ["Users"]
    assert (await client.get("/user/me/menus", headers=bearer(bystander))).json()["menus"] == []


async def test_roles_are_listed_by_name_each_with_its_own_menus(
    client: Client, services: Services, root: str
) -> None:
    first, second = await add_menus(services, {"title": "A"}, {"title": "B"})
    beta = await add_role(services, "beta", [second])
    alpha = await add_role(services, "alpha", [first, second])
    listed = (await client.get("/api/roles", headers=bearer(root))).json()
    assert [(item["id"], item["name"], item["menu_ids"]) for item in listed["items"]] == [
        (alpha, "alpha", sorted([first, second])),
        (beta, "beta", [second]),
    ]


async def test_a_taken_role_name_is_409(client: Client, services: Services, root: str) -> None:
    await add_role(services, "editors", [])
    other = await add_role(services, "viewers", [])
    created = await client.post("/api/roles", json_body={"name": "editors"}, headers=bearer(root))
    assert_error(created, 409, "role_name_taken")
    renamed = await client.request(
        "PATCH", f"/api/roles/{other}", json_body={"name": "editors"}, headers=bearer(root)
    )
    assert_error(renamed, 409, "role_name_taken")


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("DELETE", "", None),
        ("PUT", "/menus", {"menu_ids": []}),
    ],
)
async def test_an_unknown_role_id_is_404(
    client: Client, root: str, method: str, suffix: str, body: Any
) -> None:
    response = await client.request(
        method, f"/api/roles/{NO_SUCH_ID}{suffix}", json_body=body, headers=bearer(root)
    )
    assert_error(response, 404, "role_not_found")


async def test_granting_an_unknown_menu_is_404_and_grants_nothing(
    client: Client, services: Services, root: str
) -> None:
    [menu] = await add_menus(services, {"title": "A"})
    role = await add_role(services, "viewers", [])
    response = await client.request(
        "PUT",
        f"/api/roles/{role}/menus",
        json_body={"menu_ids": [menu, NO_SUCH_ID]},
        headers=bearer(root),
    )
    assert_error(response, 404, "menu_not_found")
    async with services.sessions() as session:
        assert await RoleRepository(session).menu_ids(role) == set()


@pytest.mark.parametrize(
    ("path_suffix", "method", "body", "field"),
    [
        ("", "POST", {"name": None}, "name"),
        ("", "POST", {"name": ""}, "name"),
        ("", "POST", {"name": "x", "menu_ids": [1]}, "menu_ids"),
        ("/{id}", "PATCH", {"name": None}, ""),
        ("/{id}", "PATCH", {}, ""),
        ("/{id}", "PATCH", {"name": "bell\x07"}, "name"),
        ("/{id}/menus", "PUT", {"menu_ids": [-1]}, "menu_ids.0"),
        ("/{id}/menus", "PUT", {"menu_ids": [0]}, "menu_ids.0"),
        ("/{id}/menus", "PUT", {"menu_ids": "1"}, "menu_ids"),
        ("/{id}/menus", "PUT", {}, "menu_ids"),
        ("/{id}/menus", "PUT", {"menu_ids": [], "extra": 1}, "extra"),
    ],
)
async def test_an_invalid_role_body_is_422_and_changes_nothing(
    client: Client,
    services: Services,
    root: str,
    path_suffix: str,
    method: str,
    body: Any,
    field: str,
) -> None:
    role = await add_role(services, "kept", [])
    path = "/api/roles" + path_suffix.format(id=role)
    response = await client.request(method, path, json_body=body, headers=bearer(root))
    assert field in error_fields(response)
    listed = (await client.get("/api/roles", headers=bearer(root))).json()
    assert [(item["name"], item["menu_ids"]) for item in listed["items"]] == [("kept", [])]


async def test_deleting_a_role_takes_its_grants_from_its_holders(
    client: Client, services: Services, root: str
) -> None:
    [menu] = await add_menus(services, {"title": "Reports", "url": "/reports"})
    token = await member_token(client, "cxk")
    role = await add_role(services, "viewers", [menu], ["cxk"])
    assert titles((await client.get("/user/me/menus", headers=bearer(token))).json()["menus"]) == [
        "Reports"
    ]
    assert (
        await client.request("DELETE", f"/api/roles/{role}", headers=bearer(root))
    ).status == 200
    me = (await client.get("/user/me", headers=bearer(token))).json()
    assert (me["roles"], me["menus"]) == ([], [])
    assert (await client.get("/user/me/menus", headers=bearer(token))).json()["menus"] == []


# -- users -------------------------------------------------------------------------------------


async def test_users_are_paged_and_searched_by_name_with_their_role_ids(
    client: Client, services: Services, root: str
) -> None:
    for name in ("anna", "annabel", "bob", "hannah"):
        await register(client, name)
    role = await add_role(services, "staff", [], ["annabel"])
    auth = bearer(root)
    everyone = (await client.get("/api/users", headers=auth)).json()
    assert [user["name"] for user in everyone["items"]] == [
        "root",
        "anna",
        "annabel",
        "bob",
        "hannah",
    ]
    assert (everyone["count"], everyone["offset"], everyone["limit"]) == (5, 0, 50)
    assert "password_hash" not in everyone["items"][0]
    assert everyone["items"][2]["role_ids"] == [role]

    page = (await client.get("/api/users?offset=1&limit=2", headers=auth)).json()
    assert [user["name"] for user in page["items"]] == ["anna", "annabel"]
    assert (page["count"], page["offset"], page["limit"]) == (5, 1, 2)

    found = (await client.get("/api/users?q=anna&limit=1&offset=1", headers=auth)).json()
    assert [user["name"] for user in found["items"]] == ["annabel"]
    assert found["count"] == 3
    nobody = (await client.get("/api/users?q=%25", headers=auth)).json()
    assert (nobody["items"], nobody["count"]) == ([], 0)
    past_the_end = (await client.get("/api/users?offset=100", headers=auth)).json()
    assert (past_the_end["items"], past_the_end["count"]) == ([], 5)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=1.5", "offset"),
        ("offset=99999999999", "offset"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-5", "limit"),
        ("limit=", "limit"),
        ("limit=ten", "limit"),
        ("limit=10&limit=20", "limit"),
        ("q=" + "x" * 65, "q"),
    ],
)
async def test_bad_pagination_is_422_naming_the_parameter(
    client: Client, root: str, query: str, field: str
) -> None:
    response = await client.get(f"/api/users?{query}", headers=bearer(root))
    assert error_fields(response) == {field}


async def test_the_largest_page_is_200(client: Client, root: str) -> None:
    response = await client.get("/api/users?limit=200", headers=bearer(root))
    assert response.status == 200
    assert response.json()["limit"] == 200


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"is_active": True}),
        ("PUT", "/roles", {"role_ids": []}),
        ("DELETE", "/sessions", None),
    ],
)
async def test_an_unknown_user_id_is_404(
    client: Client, root: str, method: str, suffix: str, body: Any
) -> None:
    response = await client.request(
        method, f"/api/users/{NO_SUCH_ID}{suffix}", json_body=body, headers=bearer(root)
    )
    assert_error(response, 404, "user_not_found")


async def test_get_user_shows_status_and_role_ids(
    client: Client, services: Services, root: str
) -> None:
    await register(client, "cxk", city="Beijing")
    role = await add_role(services, "staff", [], ["cxk"])
    uid = await user_id(services, "cxk")
    body = (await client.get(f"/api/users/{uid}", headers=bearer(root))).json()
    user = body["user"]
    assert (user["id"], user["name"], user["city"]) == (uid, "cxk", "Beijing")
    assert (user["is_active"], user["is_superuser"], user["role_ids"]) == (True, False, [role])
    assert "password_hash" not in user


async def test_deactivating_a_user_revokes_their_tokens(
    client: Client, services: Services, root: str
) -> None:
    token = await member_token(client, "cxk")
    other_token = await login(client, "cxk")
    uid = await user_id(services, "cxk")
    assert (await client.get("/user/me", headers=bearer(token))).status == 200, "now cached"

    response = await client.request(
        "PATCH", f"/api/users/{uid}", json_body={"is_active": False}, headers=bearer(root)
    )
    assert response.status == 200, response.text
    assert response.json()["user"]["is_active"] is False
    for each in (token, other_token):
        assert_error(await client.get("/user/me", headers=bearer(each)), 401, "token_expired")
    refused = await client.post("/user/login", json_body={"name": "cxk", "pwd": PASSWORD})
    assert refused.status == 401
    assert (await client.get("/user/me", headers=bearer(root))).status == 200, "others stay"

    reactivated = await client.request(
        "PATCH", f"/api/users/{uid}", json_body={"is_active": True}, headers=bearer(root)
    )
    assert reactivated.json()["user"]["is_active"] is True
    fresh = await login(client, "cxk")
    assert (await client.get("/user/me", headers=bearer(fresh))).status == 200


async def test_deleting_a_users_sessions_revokes_all_of_them(
    client: Client, services: Services, root: str
) -> None:
    tokens = [await member_token(client, "cxk"), await login(client, "cxk")]
    bystander = await member_token(client, "bob")
    uid = await user_id(services, "cxk")
    for token in tokens:
        assert (await client.get("/user/me", headers=bearer(token))).status == 200

    response = await client.request("DELETE", f"/api/users/{uid}/sessions", headers=bearer(root))
    assert response.json() == {"msg": "success", "revoked": 2}
    for token in tokens:
        assert (await client.get("/user/me", headers=bearer(token))).status == 401
    assert (await client.get("/user/me", headers=bearer(bystander))).status == 200
    again = await client.request("DELETE", f"/api/users/{uid}/sessions", headers=bearer(root))
    assert again.json()["revoked"] == 0
    async with services.sessions() as session:
        live = await session.scalar(
            select(func.count())
            .select_from(AuthToken)
            .where(AuthToken.user_id == uid, AuthToken.revoked_at.is_(None))
        )
    assert live == 0
    assert await login(client, "cxk"), "the account itself stays usable"


async def test_promoting_a_user_makes_them_a_superuser_on_their_next_request(
    client: Client, services: Services, root: str
) -> None:
    await add_admin_menus(services)
    token = await member_token(client, "cxk")
    assert (await client.get("/api/users", headers=bearer(token))).status == 403
    uid = await user_id(services, "cxk")
    promoted = await client.request(
        "PATCH", f"/api/users/{uid}", json_body={"is_superuser": True}, headers=bearer(root)
    )
    assert promoted.json()["user"]["is_superuser"] is True
    assert (await client.get("/api/users", headers=bearer(token))).status == 200
    me = (await client.get("/user/me", headers=bearer(token))).json()
    assert me["user"]["is_superuser"] is True


@pytest.mark.parametrize(
    ("method", "suffix", "body", "field"),
    [
        ("PATCH", "", {}, ""),
        ("PATCH", "", {"is_active": None}, ""),
        ("PATCH", "", {"is_superuser": "maybe"}, "is_superuser"),
        ("PATCH", "", {"is_active": True, "name": "x"}, "name"),
        ("PUT", "/roles", {"role_ids": [-1]}, "role_ids.0"),
        ("PUT", "/roles", {"role_ids": None}, "role_ids"),
        ("PUT", "/roles", {}, "role_ids"),
        ("PUT", "/roles", {"role_ids": [], "menu_ids": []}, "menu_ids"),
    ],
)
async def test_an_invalid_user_change_is_422(
    client: Client,
    services: Services,
    root: str,
    method: str,
    suffix: str,
    body: Any,
    field: str,
) -> None:
    uid = await user_id(services, "root")
    response = await client.request(
        method, f"/api/users/{uid}{suffix}", json_body=body, headers=bearer(root)
    )
    assert field in error_fields(response)


async def test_giving_a_user_an_unknown_role_is_404_and_changes_nothing(
    client: Client, services: Services, root: str
) -> None:
    role = await add_role(services, "staff", [])
    uid = await user_id(services, "root")
    response = await client.request(
        "PUT",
        f"/api/users/{uid}/roles",
        json_body={"role_ids": [role, NO_SUCH_ID]},
        headers=bearer(root),
    )
    assert_error(response, 404, "role_not_found")
    async with services.sessions() as session:
        assert await UserRepository(session).role_ids(uid) == set()


async def test_a_role_change_shows_on_the_users_next_me_and_my_menus(
    client: Client, services: Services, root: str
) -> None:
    menus = await add_admin_menus(services)
    token = await member_token(client, "cxk")
    uid = await user_id(services, "cxk")
    role = await add_role(services, "role-admins", [menus["/admin/roles"]], (), [ROLES_VIEW])
    before = (await client.get("/user/me", headers=bearer(token))).json()
    assert (before["roles"], before["menus"]) == ([], [])
    assert (await client.get("/api/roles", headers=bearer(token))).status == 403

    given = await client.request(
        "PUT", f"/api/users/{uid}/roles", json_body={"role_ids": [role]}, headers=bearer(root)
    )
    assert given.json()["user"]["role_ids"] == [role]
    me = (await client.get("/user/me", headers=bearer(token))).json()
    assert me["roles"] == ["role-admins"]
    assert titles(me["menus"]) == [("Admin", ["roles"])]
    mine = (await client.get("/user/me/menus", headers=bearer(token))).json()
    assert titles(mine["menus"]) == [("Admin", ["roles"])]
    assert (await client.get("/api/roles", headers=bearer(token))).status == 200

    taken = await client.request(
        "PUT", f"/api/users/{uid}/roles", json_body={"role_ids": []}, headers=bearer(root)
    )
    assert taken.json()["user"]["role_ids"] == []
    assert (await client.get("/user/me/menus", headers=bearer(token))).json()["menus"] == []
    assert (await client.get("/api/roles", headers=bearer(token))).status == 403


# -- the rules: last superuser, superuser status, own admin access ------------------------------


@pytest.mark.parametrize("change", [{"is_superuser": False}, {"is_active": False}])
async def test_the_last_superuser_cannot_be_demoted_or_deactivated(
    client: Client, services: Services, root: str, change: dict[str, bool]
) -> None:
    uid = await user_id(services, "root")
    response = await client.request(
        "PATCH", f"/api/users/{uid}", json_body=change, headers=bearer(root)
    )
    assert_error(response, 409, "last_superuser")
    me = (await client.get("/user/me", headers=bearer(root))).json()["user"]
    assert (me["is_active"], me["is_superuser"]) == (True, True)


async def test_an_admin_who_is_not_a_superuser_cannot_touch_superuser_status(
    client: Client, services: Services, root: str
) -> None:
    menus = await add_admin_menus(services)
    token = await member_token(client, "uma")
    await register(client, "cxk")
    await add_role(
        services, "user-admins", [menus["/admin/users"]], ["uma"], [USERS_VIEW, USERS_CHANGE]
    )
    uma, cxk, root_id = [await user_id(services, name) for name in ("uma", "cxk", "root")]
    attempts = [
        (uma, {"is_superuser": True}),
        (cxk, {"is_superuser": True}),
        (root_id, {"is_active": False}),
        (root_id, {"is_superuser": False}),
    ]
    for target, change in attempts:
        response = await client.request(
            "PATCH", f"/api/users/{target}", json_body=change, headers=bearer(token)
        )
        assert_error(response, 403, "superuser_required")
    assert (await audit_actions(services)).count("admin_refused") == len(attempts)
    deactivated = await client.request(
        "PATCH", f"/api/users/{cxk}", json_body={"is_active": False}, headers=bearer(token)
    )
    assert deactivated.status == 200, "ordinary accounts are theirs to manage"
    async with services.sessions() as session:
        users = UserRepository(session)
        assert [(await users.get(uid)).is_superuser for uid in (uma, cxk, root_id)] == [
            False,
            False,
            True,
        ]


@pytest.fixture
async def role_admin(
    client: Client, services: Services, root: str
) -> tuple[str, int, dict[str, int]]:
    """ "alice", holder of every administration permission (and the admin menus) only through
    the role "admins": her token, the role's id and the admin menus' ids by url (a superuser
    "root" exists too)."""
    menus = await add_admin_menus(services)
    token = await member_token(client, "alice")
    role = await add_role(services, "admins", menus.values(), ["alice"], ADMIN_PERMISSIONS)
    return token, role, menus


async def assert_alice_is_still_an_admin(client: Client, services: Services, token: str) -> None:
    for path in ("/api/menus", "/api/roles", "/api/users"):
        assert (await client.get(path, headers=bearer(token))).status == 200, path
    actions = set(await audit_actions(services))
    assert actions <= {"register", "login"}, "a refused change is rolled back, audit included"


async def test_an_admin_cannot_remove_their_own_admin_role(
    client: Client, services: Services, role_admin: tuple[str, int, dict[str, int]]
) -> None:
    token, role, _ = role_admin
    alice = await user_id(services, "alice")
    response = await client.request(
        "PUT", f"/api/users/{alice}/roles", json_body={"role_ids": []}, headers=bearer(token)
    )
    assert_error(response, 409, "own_admin_access")
    async with services.sessions() as session:
        assert await UserRepository(session).role_ids(alice) == {role}
    assert "user_roles_set" not in await audit_actions(services)
    await assert_alice_is_still_an_admin(client, services, token)


async def test_an_admin_cannot_take_an_admin_permission_from_their_own_role(
    client: Client, services: Services, role_admin: tuple[str, int, dict[str, int]]
) -> None:
    token, role, _ = role_admin
    response = await client.request(
        "PUT",
        f"/api/roles/{role}/permissions",
        json_body={"permissions": sorted(ADMIN_PERMISSIONS - {MENUS_VIEW})},
        headers=bearer(token),
    )
    assert_error(response, 409, "own_admin_access")
    assert MENUS_VIEW in response.json()["msg"]
    async with services.sessions() as session:
        assert await RoleRepository(session).permissions(role) == ADMIN_PERMISSIONS
    await assert_alice_is_still_an_admin(client, services, token)


async def test_an_admin_cannot_delete_their_own_admin_role(
    client: Client, services: Services, role_admin: tuple[str, int, dict[str, int]]
) -> None:
    token, role, _ = role_admin
    response = await client.request("DELETE", f"/api/roles/{role}", headers=bearer(token))
    assert_error(response, 409, "own_admin_access")
    await assert_alice_is_still_an_admin(client, services, token)


async def test_menus_decide_no_access_so_an_admin_may_repoint_or_delete_their_own(
    client: Client, services: Services, role_admin: tuple[str, int, dict[str, int]]
) -> None:
    token, role, menus = role_admin
    for url in ("/admin/menus-old", None):
        repointed = await client.request(
            "PATCH",
            f"/api/menus/{menus['/admin/roles']}",
            json_body={"url": url},
            headers=bearer(token),
        )
        assert repointed.status == 200, repointed.text
    deleted = await client.request(
        "DELETE", f"/api/menus/{menus['/admin/menus']}", headers=bearer(token)
    )
    assert deleted.status == 200, deleted.text
    async with services.sessions() as session:
        assert (await session.get(Menu, menus["/admin/menus"])) is None
        assert await RoleRepository(session).permissions(role) == ADMIN_PERMISSIONS
    for path in ("/api/menus", "/api/roles", "/api/users"):
        assert (await client.get(path, headers=bearer(token))).status == 200, path


async def test_an_admin_cannot_deactivate_themselves(
    client: Client, services: Services, role_admin: tuple[str, int, dict[str, int]]
) -> None:
    token, _, _ = role_admin
    alice = await user_id(services, "alice")
    response = await client.request(
        "PATCH", f"/api/users/{alice}", json_body={"is_active": False}, headers=bearer(token)
    )
    assert_error(response, 409, "own_admin_access")
    await assert_alice_is_still_an_admin(client, services, token)


async def test_a_superuser_without_an_admin_role_cannot_demote_themselves(
    client: Client, services: Services, root: str
) -> None:
    await add_admin_menus(services)
    await superuser_token(client, services, "second-root")
    uid = await user_id(services, "root")
    response = await client.request(
        "PATCH", f"/api/users/{uid}", json_body={"is_superuser": False}, headers=bearer(root)
    )
    assert_error(response, 409, "own_admin_access")
    assert (await client.get("/api/users", headers=bearer(root))).status == 200


async def test_another_admin_may_take_alices_admin_role(
    client: Client, services: Services, root: str, role_admin: tuple[str, int, dict[str, int]]
) -> None:
    token, _, _ = role_admin
    alice = await user_id(services, "alice")
    response = await client.request(
        "PUT", f"/api/users/{alice}/roles", json_body={"role_ids": []}, headers=bearer(root)
    )
    assert response.status == 200, response.text
    assert (await client.get("/api/menus", headers=bearer(token))).status == 403


# -- /user/me/menus and the cache ----------------------------------------------------------------


async def test_my_menus_show_built_in_titles_in_the_callers_language(
    client: Client, services: Services
) -> None:
    """A built-in menu (one with a message id, as the demo's) reads in the caller's language;
    one an admin typed reads as typed in every language."""
    support, chat, typed = await add_menus(
        services,
        {"title": "客服中心", "title_key": "Support"},
        {"title": "聊天室", "url": "/chat", "title_key": "Chat room", "parent": 0},
        {"title": "Wiki", "url": "/wiki"},
    )
    token = await member_token(client, "cxk")
    await add_role(services, "members", [support, chat, typed], ["cxk"])

    async def tree(**headers: str) -> list[Any]:
        response = await client.get("/user/me/menus", headers={**bearer(token), **headers})
        return titles(response.json()["menus"])

    assert await tree() == [("客服中心", ["聊天室"]), "Wiki"]
    assert await tree(**{"Accept-Language": "zh-CN,zh;q=0.9"}) == [("客服中心", ["聊天室"]), "Wiki"]
    assert await tree(**{"Accept-Language": "en-GB,en;q=0.8"}) == [
        ("Support", ["Chat room"]),
        "Wiki",
    ]


async def test_my_menus_shows_granted_menus_with_their_ancestors_only(
    client: Client, services: Services, root: str
) -> None:
    shop, orders, goods, _ = await add_menus(
        services,
        {"title": "Shop", "sort": 1},
        {"title": "Orders", "url": "/shop/orders", "parent": 0, "sort": 1},
        {"title": "Goods", "url": "/shop/goods", "parent": 0, "sort": 2},
        {"title": "Home", "url": "/home", "sort": 0},
    )
    token = await member_token(client, "cxk")
    await add_role(services, "clerks", [orders], ["cxk"])
    mine = (await client.get("/user/me/menus", headers=bearer(token))).json()
    assert mine["msg"] == "success"
    assert titles(mine["menus"]) == [("Shop", ["Orders"])]
    assert mine["menus"][0]["id"] == shop
    everything = (await client.get("/user/me/menus", headers=bearer(root))).json()
    assert titles(everything["menus"]) == ["Home", ("Shop", ["Orders", "Goods"])]
    assert goods not in {node["id"] for node in mine["menus"][0]["children"]}


async def test_my_menus_reflects_a_grant_change_on_the_very_next_call(
    client: Client, services: Services, root: str
) -> None:
    reports, audit = await add_menus(
        services, {"title": "Reports", "url": "/reports"}, {"title": "Audit", "url": "/audit"}
    )
    token = await member_token(client, "cxk")
    role = await add_role(services, "viewers", [reports], ["cxk"])
    assert titles((await client.get("/user/me/menus", headers=bearer(token))).json()["menus"]) == [
        "Reports"
    ]

    async def my_titles() -> list[Any]:
        return titles((await client.get("/user/me/menus", headers=bearer(token))).json()["menus"])

    put = await client.request(
        "PUT",
        f"/api/roles/{role}/menus",
        json_body={"menu_ids": [reports, audit]},
        headers=bearer(root),
    )
    assert put.status == 200
    assert await my_titles() == ["Reports", "Audit"]
    await client.request(
        "PATCH", f"/api/menus/{audit}", json_body={"title": "Audit log"}, headers=bearer(root)
    )
    assert await my_titles() == ["Reports", "Audit log"]
    await client.request("DELETE", f"/api/menus/{reports}", headers=bearer(root))
    assert await my_titles() == ["Audit log"]
    await client.request("DELETE", f"/api/roles/{role}", headers=bearer(root))
    assert await my_titles() == []


def all_titles(nodes: list[dict[str, Any]]) -> set[str]:
    """Every title anywhere in a JSON menu forest."""
    return {node["title"] for node in nodes} | {
        title for node in nodes for title in all_titles(node["children"])
    }


async def hide(client: Client, root: str, menu_id: int) -> None:
    response = await client.request(
        "PATCH", f"/api/menus/{menu_id}", json_body={"visible": False}, headers=bearer(root)
    )
    assert response.status == 200, response.text


async def test_a_hidden_menu_is_not_shown_and_its_permission_still_works(
    client: Client, services: Services, root: str
) -> None:
    menus = await add_admin_menus(services)
    token = await member_token(client, "cxk")
    await add_role(services, "role-admins", [menus["/admin/roles"]], ["cxk"], [ROLES_VIEW])
    mine = (await client.get("/user/me/menus", headers=bearer(token))).json()["menus"]
    assert titles(mine) == [("Admin", ["roles"])]

    await hide(client, root, menus["/admin/roles"])
    mine = (await client.get("/user/me/menus", headers=bearer(token))).json()["menus"]
    assert mine == [], "neither the hidden menu nor the ancestor shown only for it"
    assert "roles" not in all_titles(
        (await client.get("/user/me", headers=bearer(token))).json()["menus"]
    )
    assert (await client.get("/api/roles", headers=bearer(token))).status == 200
    assert (await client.get("/api/menus", headers=bearer(token))).status == 403
    everything = (await client.get("/api/menus", headers=bearer(root))).json()["menus"]
    assert "roles" in all_titles(everything), "admins still see hidden menus"


async def test_a_hidden_menu_leaves_its_visible_granted_siblings_and_their_parent(
    client: Client, services: Services, root: str
) -> None:
    menus = await add_admin_menus(services)
    token = await member_token(client, "cxk")
    await add_role(
        services,
        "staff",
        [menus["/admin/roles"], menus["/admin/users"]],
        ["cxk"],
        [ROLES_VIEW, USERS_VIEW],
    )
    await hide(client, root, menus["/admin/roles"])
    mine = (await client.get("/user/me/menus", headers=bearer(token))).json()["menus"]
    assert titles(mine) == [("Admin", ["users"])]


# -- audit ---------------------------------------------------------------------------------------


async def test_every_change_through_the_api_is_audited(
    client: Client, services: Services, root: str
) -> None:
    auth = bearer(root)
    await register(client, "cxk")
    uid = await user_id(services, "cxk")
    menu = (await client.post("/api/menus", json_body={"title": "M"}, headers=auth)).json()["menu"]
    await client.request("PATCH", f"/api/menus/{menu['id']}", json_body={"sort": 3}, headers=auth)
    role = (await client.post("/api/roles", json_body={"name": "r"}, headers=auth)).json()["role"]
    await client.request("PATCH", f"/api/roles/{role['id']}", json_body={"name": "s"}, headers=auth)
    await client.request(
        "PUT", f"/api/roles/{role['id']}/menus", json_body={"menu_ids": [menu["id"]]}, headers=auth
    )
    await client.request(
        "PUT",
        f"/api/roles/{role['id']}/permissions",
        json_body={"permissions": [USERS_VIEW]},
        headers=auth,
    )
    await client.request(
        "PUT", f"/api/users/{uid}/roles", json_body={"role_ids": [role["id"]]}, headers=auth
    )
    await client.request("PATCH", f"/api/users/{uid}", json_body={"is_active": False}, headers=auth)
    await client.request("DELETE", f"/api/users/{uid}/sessions", headers=auth)
    await client.request("DELETE", f"/api/roles/{role['id']}", headers=auth)
    await client.request("DELETE", f"/api/menus/{menu['id']}", headers=auth)
    # Reads and refusals leave nothing.
    await client.get("/api/menus", headers=auth)
    await client.post("/api/roles", json_body={"name": None}, headers=auth)

    async with services.sessions() as session:
        entries = list(reversed(await AuditRepository(session).list()))
    admin_entries = [entry for entry in entries if entry.action not in ("register", "login")]
    assert [entry.action for entry in admin_entries] == [
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
    root_id = await user_id(services, "root")
    assert all(entry.user_id == root_id for entry in admin_entries)
    assert all(entry.client_ip == "127.0.0.1" for entry in admin_entries)


# -- OpenAPI -------------------------------------------------------------------------------------

DOCUMENTED: dict[tuple[str, str], tuple[str | None, str, set[int]]] = {
    ("/api/menus", "get"): (None, "MenuTree", {401, 403, 422}),
    ("/api/menus", "post"): ("MenuCreate", "MenuResponse", {401, 403, 404, 409, 422}),
    ("/api/menus/{menu_id}", "get"): (None, "MenuResponse", {401, 403, 404}),
    ("/api/menus/{menu_id}", "patch"): ("MenuUpdate", "MenuResponse", {401, 403, 404, 409, 422}),
    ("/api/menus/{menu_id}", "delete"): (None, "MenuDeleted", {401, 403, 404, 409, 422}),
    ("/api/roles", "get"): (None, "RoleList", {401, 403}),
    ("/api/roles", "post"): ("RoleCreate", "RoleResponse", {401, 403, 409, 422}),
    ("/api/roles/{role_id}", "get"): (None, "RoleResponse", {401, 403, 404}),
    ("/api/roles/{role_id}", "patch"): ("RoleUpdate", "RoleResponse", {401, 403, 404, 409, 422}),
    ("/api/roles/{role_id}", "delete"): (None, "Success", {401, 403, 404, 409}),
    ("/api/roles/{role_id}/menus", "put"): ("RoleMenus", "RoleResponse", {401, 403, 404, 409, 422}),
    ("/api/roles/{role_id}/permissions", "put"): (
        "RolePermissions",
        "RoleResponse",
        {401, 403, 404, 409, 422},
    ),
    ("/api/users", "get"): (None, "UserPage", {401, 403, 422}),
    ("/api/users/{user_id}", "get"): (None, "UserAdminResponse", {401, 403, 404}),
    ("/api/users/{user_id}", "patch"): (
        "UserStatusUpdate",
        "UserAdminResponse",
        {401, 403, 404, 409, 422},
    ),
    ("/api/users/{user_id}/roles", "put"): (
        "UserRoles",
        "UserAdminResponse",
        {401, 403, 404, 409, 422},
    ),
    ("/api/users/{user_id}/sessions", "delete"): (None, "SessionsRevoked", {401, 403, 404}),
    ("/user/me/menus", "get"): (None, "MenuTree", {401}),
}


async def test_every_admin_route_is_in_openapi_with_its_models_and_errors(client: Client) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for (path, method), (request, response, errors) in DOCUMENTED.items():
        operation = paths[path][method]
        ok = next(status for status in operation["responses"] if status.startswith("2"))
        schema = operation["responses"][ok]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{response}"}, (path, method)
        if request is None:
            assert "requestBody" not in operation, (path, method)
        else:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert body == {"$ref": f"#/components/schemas/{request}"}, (path, method)
        assert errors <= {int(status) for status in operation["responses"]}, (path, method)
        assert operation["security"] == [{"bearer": []}], (path, method)
    api_operations = {
        (path, method)
        for path, methods in paths.items()
        if path.startswith(ADMIN_API_PREFIXES)
        for method in methods
    }
    assert api_operations == {key for key in DOCUMENTED if key[0].startswith(ADMIN_API_PREFIXES)}
    assert paths["/api/menus/{menu_id}"]["get"]["parameters"] == [
        {
            "name": "menu_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    ]


# -- several processes ---------------------------------------------------------------------------


@pytest.fixture
async def two_processes(
    tmp_path: Path, sqlite_url: str
) -> AsyncIterator[tuple[tuple[Services, Client], tuple[Services, Client]]]:
    """Two complete sets of services on one database and one Redis, each serving the app."""
    redis_url = service_url("MSERVICES_TEST_REDIS_URL", "Redis")
    shared = {
        "redis_url": redis_url,
        "redis_prefix": f"test-{secrets.token_hex(6)}",
        "cookie_secret": secrets.token_hex(32),
    }
    started = []
    try:
        for name in ("a", "b"):
            settings = make_settings(tmp_path / name, sqlite_url, **shared)
            services = await open_services(settings)
            server, base_url = await serve_app(make_app(settings, services))
            started.append((services, Client(base_url), server))
            await asyncio.wait_for(services.invalidation.subscribed.wait(), timeout=5)
        yield (started[0][0], started[0][1]), (started[1][0], started[1][1])
    finally:
        for services, client, server in started:
            client.close()
            server.stop()
            await services.close()


@pytest.mark.redis
async def test_a_grant_change_on_one_process_reaches_the_other_within_a_second(
    two_processes: tuple[tuple[Services, Client], tuple[Services, Client]],
) -> None:
    (services, a), (_, b) = two_processes
    reports, audit = await add_menus(
        services, {"title": "Reports", "url": "/reports"}, {"title": "Audit", "url": "/audit"}
    )
    root = await superuser_token(a, services)
    token = await member_token(a, "cxk")
    role = await add_role(services, "viewers", [reports], ["cxk"])
    before = (await b.get("/user/me/menus", headers=bearer(token))).json()
    assert titles(before["menus"]) == ["Reports"], "cached on b"

    changed = await a.request(
        "PUT", f"/api/roles/{role}/menus", json_body={"menu_ids": [audit]}, headers=bearer(root)
    )
    assert changed.status == 200
    assert titles((await a.get("/user/me/menus", headers=bearer(token))).json()["menus"]) == [
        "Audit"
    ], "at once on a"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    seen: list[Any] = []
    while loop.time() < deadline:
        seen = titles((await b.get("/user/me/menus", headers=bearer(token))).json()["menus"])
        if seen == ["Audit"]:
            break
        await asyncio.sleep(0.02)
    assert seen == ["Audit"]

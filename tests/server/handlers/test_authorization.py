"""Issue 9's attacks, made as the attacker made them: over HTTP against the real application, by
accounts that hold one administration permission (none of them a superuser), on SQLite and on
MariaDB. Each attack succeeded before permissions by code, the grant ceiling and the admin lock;
each test here says what the server must answer instead, and that nothing changed.

Also: the races of two admins acting at the same moment (sent together with ``asyncio.gather``,
many rounds), the menu depth limit, the OpenAPI document against the route table's declarations,
and every non-public route refusing a visitor.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from tornado.routing import PathMatches, Rule
from tornado.web import RequestHandler

from repositories.models import (
    AuditEntry,
    AuthToken,
    Menu,
    Role,
    User,
    role_menu,
    role_permission,
    user_role,
)
from server.admin import REFUSED_ACTION
from server.openapi import PATH_GROUP, openapi_path
from server.permissions import (
    ADMIN_PERMISSIONS,
    AUDIT_VIEW,
    CHAT_USE,
    LOGIN,
    MENUS_CHANGE,
    MENUS_VIEW,
    ORDERS_USE,
    PERMISSIONS,
    PUBLIC,
    ROLES_CHANGE,
    ROLES_VIEW,
    SESSIONS_REVOKE,
    USERS_ASSIGN,
    USERS_CHANGE,
    USERS_VIEW,
    rule_requirement,
)
from server.routes import build_routes
from server.services import Services
from server.settings import Settings
from tests.conftest import Client, Response, make_settings
from tests.server.handlers.test_admin_api import (
    add_admin_menus,
    add_menus,
    add_role,
    assert_error,
    member_token,
    superuser_token,
    user_id,
)
from tests.server.handlers.test_user import bearer, login, make_superuser, register

ROUNDS = 20
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
async def settings(tmp_path: Path, database_url: str, engine: AsyncEngine) -> Settings:
    """Settings on ``database_url``, so that every test here runs on SQLite and on MariaDB
    (``engine`` deletes MariaDB's rows once the test is over)."""
    return make_settings(tmp_path, database_url)


# -- helpers ---------------------------------------------------------------------------------


async def attacker(
    client: Client, services: Services, name: str, *permissions: str, menu_ids: Any = ()
) -> tuple[str, int, int]:
    """Register ``name`` holding exactly ``permissions`` (and ``menu_ids``) through a role of
    their own; their token, their id and the role's id."""
    token = await member_token(client, name)
    role = await add_role(services, f"{name}-role", menu_ids, [name], permissions)
    return token, await user_id(services, name), role


async def other_roles(services: Services, menus: dict[str, int]) -> dict[str, int]:
    """The roles an attacker would like to hold, by name."""
    return {
        "admins": await add_role(services, "admins", menus.values(), (), PERMISSIONS),
        "role-admins": await add_role(
            services, "role-admins", [menus["/admin/roles"]], (), [ROLES_VIEW, ROLES_CHANGE]
        ),
        "menu-admins": await add_role(
            services, "menu-admins", [menus["/admin/menus"]], (), [MENUS_VIEW, MENUS_CHANGE]
        ),
        "customers": await add_role(services, "customers", [], (), [CHAT_USE, ORDERS_USE]),
    }


async def snapshot(services: Services) -> dict[str, Any]:
    """Everything an administrative change could alter: memberships, grants, the menu tree,
    user status, live sessions (the audit log is left out: refusals are written there)."""
    async with services.sessions() as session:

        async def rows(statement: Any) -> list[tuple[Any, ...]]:
            return sorted(tuple(row) for row in (await session.execute(statement)).all())

        return {
            "memberships": await rows(select(user_role.c.user_id, user_role.c.role_id)),
            "menu grants": await rows(select(role_menu.c.role_id, role_menu.c.menu_id)),
            "permission grants": await rows(
                select(role_permission.c.role_id, role_permission.c.permission)
            ),
            "roles": await rows(select(Role.id, Role.name, Role.description)),
            "menus": await rows(
                select(Menu.id, Menu.title, Menu.url, Menu.parent_id, Menu.permission)
            ),
            "users": await rows(select(User.id, User.is_active, User.is_superuser)),
            "live sessions": await rows(
                select(AuthToken.user_id, func.count())
                .where(AuthToken.revoked_at.is_(None))
                .group_by(AuthToken.user_id)
            ),
        }


async def audited(services: Services, action: str | None = None) -> list[AuditEntry]:
    """The audit log (only ``action`` when given), oldest first."""
    async with services.sessions() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        return list((await session.scalars(query)).all())


async def refusal_codes(services: Services, actor_id: int) -> list[str]:
    """The codes of the refusals audited for ``actor_id``, oldest first."""
    return [
        (entry.detail or "").split(":", 1)[0]
        for entry in await audited(services, REFUSED_ACTION)
        if entry.user_id == actor_id
    ]


async def put(client: Client, path: str, body: Any, token: str) -> Response:
    return await client.request("PUT", path, json_body=body, headers=bearer(token))


async def patch(client: Client, path: str, body: Any, token: str) -> Response:
    return await client.request("PATCH", path, json_body=body, headers=bearer(token))


async def active_superusers(services: Services) -> int:
    async with services.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.is_superuser.is_(True), User.is_active.is_(True))
        )
    return int(count or 0)


# -- (a) a user admin gives themselves every role ---------------------------------------------


async def test_a_user_admin_cannot_give_themselves_roles_beyond_their_grants(
    client: Client, services: Services
) -> None:
    menus = await add_admin_menus(services)
    roles = await other_roles(services, menus)
    token, me, own = await attacker(client, services, "mallory", USERS_VIEW, USERS_ASSIGN)
    before = await snapshot(services)

    everything = await put(
        client, f"/api/users/{me}/roles", {"role_ids": [own, *roles.values()]}, token
    )
    assert_error(everything, 403, "grant_ceiling")
    for role in roles.values():
        one = await put(client, f"/api/users/{me}/roles", {"role_ids": [own, role]}, token)
        assert_error(one, 403, "grant_ceiling")

    assert await snapshot(services) == before
    for path in ("/api/roles", "/api/menus"):
        assert_error(await client.get(path, headers=bearer(token)), 403, "permission_required")
    assert await refusal_codes(services, me) == ["grant_ceiling"] * (1 + len(roles))


# -- (b) a role admin adds what it lacks to its own role ----------------------------------------


async def test_a_role_admin_cannot_add_a_permission_or_menu_it_lacks_to_any_role(
    client: Client, services: Services
) -> None:
    menus = await add_admin_menus(services)
    token, me, own = await attacker(
        client, services, "rita", ROLES_VIEW, ROLES_CHANGE, menu_ids=[menus["/admin/roles"]]
    )
    created = await client.post("/api/roles", json_body={"name": "fresh"}, headers=bearer(token))
    assert created.status == 201, "creating an empty role is within her grants"
    fresh = created.json()["role"]["id"]
    before = await snapshot(services)

    attempts = [
        (
            f"/api/roles/{own}/permissions",
            {"permissions": [ROLES_VIEW, ROLES_CHANGE, USERS_ASSIGN]},
        ),
        (f"/api/roles/{own}/menus", {"menu_ids": [menus["/admin/roles"], menus["/admin/users"]]}),
        (f"/api/roles/{fresh}/permissions", {"permissions": [USERS_VIEW]}),
        (f"/api/roles/{fresh}/menus", {"menu_ids": [menus["/admin/users"]]}),
    ]
    for path, body in attempts:
        assert_error(await put(client, path, body, token), 403, "grant_ceiling")

    assert await snapshot(services) == before
    for path in ("/api/users", f"/api/users/{me}", "/api/menus"):
        assert_error(await client.get(path, headers=bearer(token)), 403, "permission_required")
    assert await refusal_codes(services, me) == ["grant_ceiling"] * len(attempts)


async def test_a_role_admin_cannot_rename_or_delete_a_role_granting_more_than_it_holds(
    client: Client, services: Services
) -> None:
    menus = await add_admin_menus(services)
    roles = await other_roles(services, menus)
    token, me, _ = await attacker(client, services, "rita", ROLES_VIEW, ROLES_CHANGE)
    before = await snapshot(services)
    renamed = await patch(client, f"/api/roles/{roles['admins']}", {"name": "mine"}, token)
    assert_error(renamed, 403, "grant_ceiling")
    deleted = await client.request("DELETE", f"/api/roles/{roles['admins']}", headers=bearer(token))
    assert_error(deleted, 403, "grant_ceiling")
    assert await snapshot(services) == before
    assert await refusal_codes(services, me) == ["grant_ceiling"] * 2


# -- (c) a menu admin repoints a menu at /admin/users -----------------------------------------


async def test_a_menu_admin_repointing_a_menu_at_admin_users_gains_nothing(
    client: Client, services: Services
) -> None:
    _, own_menu = await add_menus(
        services,
        {"title": "Admin"},
        {"title": "menus", "url": "/admin/menus", "permission": MENUS_VIEW, "parent": 0},
    )
    token, me, _ = await attacker(
        client, services, "mia", MENUS_VIEW, MENUS_CHANGE, menu_ids=[own_menu]
    )
    repointed = await patch(client, f"/api/menus/{own_menu}", {"url": "/admin/users"}, token)
    assert repointed.status == 200, "editing menus is her job"
    assert repointed.json()["menu"]["url"] == "/admin/users"

    for path in ("/api/users", f"/api/users/{me}"):
        assert_error(await client.get(path, headers=bearer(token)), 403, "permission_required")
    roles = await put(client, f"/api/users/{me}/roles", {"role_ids": []}, token)
    assert_error(roles, 403, "permission_required")

    before = await snapshot(services)
    renamed = await patch(client, f"/api/menus/{own_menu}", {"permission": USERS_VIEW}, token)
    assert_error(renamed, 403, "grant_ceiling")
    created = await client.post(
        "/api/menus",
        json_body={"title": "users", "url": "/admin/people", "permission": USERS_VIEW},
        headers=bearer(token),
    )
    assert_error(created, 403, "grant_ceiling")
    assert await snapshot(services) == before
    assert await refusal_codes(services, me) == ["grant_ceiling"] * 2


# -- (d) the user admin overrules a superuser ---------------------------------------------------


async def test_a_user_admin_cannot_revoke_re_role_or_change_a_superuser(
    client: Client, services: Services
) -> None:
    menus = await add_admin_menus(services)
    roles = await other_roles(services, menus)
    root_tokens = [await superuser_token(client, services), await login(client, "root")]
    root = await user_id(services, "root")
    await add_role(services, "root-extra", [], ["root"], [CHAT_USE])
    token, me, _ = await attacker(
        client, services, "uma", USERS_VIEW, USERS_CHANGE, USERS_ASSIGN, SESSIONS_REVOKE
    )
    for each in root_tokens:
        assert (await client.get("/user/me", headers=bearer(each))).status == 200, "cached now"
    before = await snapshot(services)

    attempts = [
        await client.request("DELETE", f"/api/users/{root}/sessions", headers=bearer(token)),
        await put(client, f"/api/users/{root}/roles", {"role_ids": []}, token),
        await put(client, f"/api/users/{root}/roles", {"role_ids": [roles["customers"]]}, token),
        await patch(client, f"/api/users/{root}", {"is_active": False}, token),
        await patch(client, f"/api/users/{root}", {"is_superuser": False}, token),
        await patch(client, f"/api/users/{me}", {"is_superuser": True}, token),
    ]
    for response in attempts:
        assert_error(response, 403, "superuser_required")

    assert await snapshot(services) == before
    for each in root_tokens:
        me_now = await client.get("/user/me", headers=bearer(each))
        assert me_now.status == 200, "the superuser's sessions survive"
        assert me_now.json()["user"]["is_superuser"] is True
    assert await refusal_codes(services, me) == ["superuser_required"] * len(attempts)


# -- (e) every refusal is audited although nothing changed ---------------------------------------


async def test_every_refusal_leaves_an_admin_refused_row_although_nothing_changed(
    client: Client, services: Services
) -> None:
    menus = await add_admin_menus(services)
    roles = await other_roles(services, menus)
    await superuser_token(client, services)
    root = await user_id(services, "root")
    auditor_token, auditor, _ = await attacker(client, services, "audrey", AUDIT_VIEW)
    token, me, own = await attacker(
        client, services, "uma", USERS_VIEW, USERS_CHANGE, USERS_ASSIGN, SESSIONS_REVOKE
    )
    before = await snapshot(services)
    actions_before = [entry.action for entry in await audited(services)]

    refusals = [
        (
            await put(
                client, f"/api/users/{me}/roles", {"role_ids": [own, roles["admins"]]}, token
            ),
            "grant_ceiling",
        ),
        (
            await client.request("DELETE", f"/api/users/{root}/sessions", headers=bearer(token)),
            "superuser_required",
        ),
        (
            await patch(client, f"/api/users/{auditor}", {"is_active": False}, token),
            "user_outranks_you",
        ),
    ]
    for response, code in refusals:
        assert_error(response, 403, code)

    assert await snapshot(services) == before
    assert (await client.get("/user/me", headers=bearer(auditor_token))).status == 200
    entries = await audited(services)
    new = entries[len(actions_before) :]
    assert [entry.action for entry in entries[: len(actions_before)]] == actions_before
    assert [entry.action for entry in new] == [REFUSED_ACTION] * len(refusals)
    for entry, (_, code) in zip(new, refusals, strict=True):
        assert (entry.user_id, entry.actor, entry.client_ip) == (me, "uma", "127.0.0.1")
        assert (entry.detail or "").startswith(f"{code}: "), entry.detail


# -- (f) ten escalations at the same moment -------------------------------------------------------


async def test_ten_simultaneous_escalations_by_a_user_admin_are_all_refused(
    client: Client, services: Services
) -> None:
    token, me, own = await attacker(client, services, "mallory", USERS_VIEW, USERS_ASSIGN)
    beyond = sorted(set(PERMISSIONS) - {USERS_VIEW, USERS_ASSIGN})
    ladder = [
        await add_role(services, f"escalation-{step}", [], (), beyond[: step + 1])
        for step in range(10)
    ]
    before = await snapshot(services)

    responses = await asyncio.gather(
        *(
            put(client, f"/api/users/{me}/roles", {"role_ids": [own, *ladder[: step + 1]]}, token)
            for step in range(10)
        )
    )

    for response in responses:
        assert_error(response, 403, "grant_ceiling")
    assert await snapshot(services) == before
    assert await refusal_codes(services, me) == ["grant_ceiling"] * 10
    assert_error(await client.get("/api/roles", headers=bearer(token)), 403, "permission_required")


# -- (g) two superusers demote each other at the same moment --------------------------------------


async def test_two_superusers_demoting_each_other_at_once_never_leave_none(
    client: Client, services: Services
) -> None:
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    for name in ("ann", "ben"):
        await register(client, name)
        await make_superuser(services, name)
        tokens[name] = await login(client, name)
        ids[name] = await user_id(services, name)

    for _ in range(ROUNDS):
        by_ann, by_ben = await asyncio.gather(
            patch(client, f"/api/users/{ids['ben']}", {"is_superuser": False}, tokens["ann"]),
            patch(client, f"/api/users/{ids['ann']}", {"is_superuser": False}, tokens["ben"]),
        )
        assert sorted([by_ann.status, by_ben.status]) == [200, 403], (by_ann.text, by_ben.text)
        assert await active_superusers(services) == 1
        winner, loser, refused = (
            ("ann", "ben", by_ben) if by_ann.status == 200 else ("ben", "ann", by_ann)
        )
        assert refused.json()["code"] in ("superuser_required", "permission_required")
        restored = await patch(
            client, f"/api/users/{ids[loser]}", {"is_superuser": True}, tokens[winner]
        )
        assert restored.status == 200, restored.text
    assert await active_superusers(services) == 2


# -- (h) two menus moved under each other at the same moment --------------------------------------


async def test_two_menus_moved_under_each_other_at_once_never_make_a_cycle(
    client: Client, services: Services
) -> None:
    token = await superuser_token(client, services)
    a, b = await add_menus(services, {"title": "A"}, {"title": "B"})
    top = a
    for round_number in range(ROUNDS):
        a_under_b, b_under_a = await asyncio.gather(
            patch(client, f"/api/menus/{a}", {"parent_id": b}, token),
            patch(client, f"/api/menus/{b}", {"parent_id": a}, token),
        )
        assert sorted([a_under_b.status, b_under_a.status]) == [200, 409], (
            a_under_b.text,
            b_under_a.text,
        )
        refused = b_under_a if a_under_b.status == 200 else a_under_b
        assert_error(refused, 409, "menu_cycle")
        moved, top = (a, b) if a_under_b.status == 200 else (b, a)
        tree = await client.get("/api/menus", headers=bearer(token))
        assert tree.status == 200, tree.text
        [root] = tree.json()["menus"]
        assert (root["id"], [child["id"] for child in root["children"]]) == (top, [moved])
        if round_number < ROUNDS - 1:
            assert (
                await patch(client, f"/api/menus/{moved}", {"parent_id": None}, token)
            ).status == 200

    deleted = await client.request("DELETE", f"/api/menus/{top}?cascade=1", headers=bearer(token))
    assert deleted.status == 200, deleted.text
    assert sorted(deleted.json()["deleted"]) == sorted([a, b])


# -- (i) a 300-deep chain -------------------------------------------------------------------------


async def test_a_300_deep_chain_stops_at_32_and_breaks_no_other_request(
    client: Client, services: Services
) -> None:
    token = await superuser_token(client, services)
    visitor_menu, below = await add_menus(
        services, {"title": "Side"}, {"title": "Leaf", "parent": 0}
    )
    chain: list[int] = []
    for level in range(1, 301):
        parent = chain[-1] if chain else None
        response = await client.post(
            "/api/menus",
            json_body={"title": f"level {level}", "parent_id": parent},
            headers=bearer(token),
        )
        if level <= 32:
            assert response.status == 201, (level, response.text)
            chain.append(response.json()["menu"]["id"])
        else:
            assert_error(response, 422, "menu_too_deep")
    moved = await patch(client, f"/api/menus/{visitor_menu}", {"parent_id": chain[-1]}, token)
    assert_error(moved, 422, "menu_too_deep")
    await add_role(services, "anonymous", [chain[-1], below])

    for path in (
        "/user/me",
        "/user/me/menus",
        "/api/menus",
        "/api/menus?flat=1",
        "/api/users",
        "/",
    ):
        response = await client.get(path, headers=bearer(token))
        assert response.status == 200, (path, response.text[:200])
    for path in ("/", "/login"):
        assert (await client.get(path)).status == 200, path
    deepest = (await client.get("/api/menus", headers=bearer(token))).json()["menus"]
    depth = 0
    nodes = [node for node in deepest if node["id"] == chain[0]]
    while nodes:
        depth += 1
        nodes = nodes[0]["children"]
    assert depth == 32

    deleted = await client.request(
        "DELETE", f"/api/menus/{chain[0]}?cascade=1", headers=bearer(token)
    )
    assert deleted.status == 200, deleted.text
    assert sorted(deleted.json()["deleted"]) == sorted(chain)


# -- (j) the OpenAPI document says what the route table declares -----------------------------------


def handler_methods(rule: Rule) -> list[str]:
    """The HTTP methods ``rule``'s handler implements."""
    handler = rule.target
    assert isinstance(handler, type) and issubclass(handler, RequestHandler), rule
    return [
        method
        for method in METHODS
        if getattr(handler, method.lower()) is not getattr(RequestHandler, method.lower())
    ]


async def test_every_route_declares_a_requirement_and_openapi_shows_each_permission(
    client: Client, services: Services
) -> None:
    rules = build_routes(services)
    assert [rule.name for rule in rules if rule_requirement(rule) is None] == []
    document = (await client.get("/openapi.json")).json()
    compared: list[tuple[str, str]] = []
    for rule in rules:
        operations = getattr(rule.target, "operations", None)
        requirement = rule_requirement(rule)
        if not operations or requirement is None:
            continue
        assert isinstance(rule.matcher, PathMatches)
        path, _ = openapi_path(rule.matcher.regex.pattern)
        for method in operations:
            operation = document["paths"][path][method.lower()]
            need = requirement.for_method(method)
            if need in (PUBLIC, LOGIN):
                assert "x-permission" not in operation, (path, method)
            else:
                assert operation["x-permission"] == need, (path, method)
                assert "403" in operation["responses"], (path, method)
            assert ("security" in operation) == (need != PUBLIC), (path, method)
            compared.append((path, method.lower()))
    documented = [
        (path, method) for path, methods in document["paths"].items() for method in methods
    ]
    assert sorted(compared) == sorted(documented)

    admin = [
        (path, method)
        for path, method in documented
        if path.startswith(("/api/menus", "/api/roles", "/api/users", "/api/audit"))
    ]
    assert len(admin) >= 17
    for path, method in admin:
        assert document["paths"][path][method]["x-permission"] in ADMIN_PERMISSIONS, (path, method)


# -- (k) a visitor gets nothing from a route that is not public ------------------------------------

SAMPLE_VALUES = ("1", "a" * 32, "x")


def group_values(group: str) -> list[str]:
    """The values tried for a path group: each word of a literal or an alternation
    (``update|move``), else the first sample id it accepts."""
    if re.fullmatch(r"\w+(\|\w+)*", group):
        return group.split("|")
    for value in SAMPLE_VALUES:
        if re.fullmatch(group, value):
            return [value]
    raise AssertionError(f"no sample value for the path group {group}")


def fill_groups(pattern: str, values: Iterable[str]) -> str:
    """``pattern`` with its named groups replaced by ``values``, in order."""
    filling = iter(values)
    return PATH_GROUP.sub(lambda _: next(filling), pattern)


def sample_paths(rule: Rule) -> list[str]:
    """Paths ``rule`` matches, its named groups filled with sample ids (every alternative)."""
    assert isinstance(rule.matcher, PathMatches)
    pattern = rule.matcher.regex.pattern
    groups = [group_values(match["pattern"]) for match in PATH_GROUP.finditer(pattern)]
    paths = []
    for values in itertools.product(*groups):
        path = fill_groups(pattern.rstrip("$"), values).replace("\\", "")
        assert rule.matcher.regex.match(path), (pattern, path)
        paths.append(path)
    return paths


async def test_every_route_that_is_not_public_refuses_a_visitor(
    client: Client, services: Services
) -> None:
    # A visitor's browser that loaded a form holds a matching XSRF cookie and field, so the
    # refusal below comes from the route's requirement, not from the XSRF check.
    xsrf = secrets.token_hex(16)
    headers = {"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf}
    checked: list[str] = []
    for rule in build_routes(services):
        requirement = rule_requirement(rule)
        assert requirement is not None, rule.name
        for path in sample_paths(rule):
            for method in handler_methods(rule):
                if requirement.for_method(method) == PUBLIC:
                    continue
                body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
                response = await client.request(method, path, json_body=body, headers=headers)
                location = response.headers.get("Location", "")
                assert response.status == 401 or (
                    response.status in (302, 303) and location.startswith("/login")
                ), (method, path, response.status, response.text[:200])
                checked.append(f"{method} {path}")
    assert "PUT /api/users/1/roles" in checked
    assert "GET /message" in checked
    assert len(checked) >= 40

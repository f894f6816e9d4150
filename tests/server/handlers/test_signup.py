"""Registration: the sign-up role (``MSERVICES_SIGNUP_ROLE``), the per-IP registration throttle,
and the home page a new account sees."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from repositories.models import AuditEntry
from repositories.roles import RoleRepository
from server import accounts
from server.app import make_app
from server.handlers.base import LANGUAGE_COOKIE
from server.services import Services, open_services
from server.settings import Settings
from tests.conftest import Client, make_settings, serve_app, service_url
from tests.server.handlers.test_admin_pages import Browser
from tests.server.handlers.test_user import PASSWORD, bearer, login

NO_MENUS_FOR_YOU = "你的角色还没有可见的菜单，请联系管理员。"
NO_MENUS_FOR_VISITORS = "还没有为访客发布任何菜单。"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """New accounts get the role ``customer``; three registrations per IP per hour."""
    return make_settings(tmp_path, sqlite_url, signup_role="customer", signup_per_ip=3)


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[Client, Services]]:
    """Another application (as another process would be) on ``settings``."""
    services = await open_services(settings)
    server, base_url = await serve_app(make_app(settings, services))
    client = Client(base_url)
    try:
        yield client, services
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
        await services.close()


async def add_role(services: Services, name: str, *permissions: str) -> None:
    async with services.sessions() as session, session.begin():
        roles = RoleRepository(session)
        role = await roles.add(name=name)
        await roles.set_permissions(role.id, list(permissions))


async def sign_up(client: Client, name: str, **extra: Any) -> Any:
    return await client.post("/user", json_body={"name": name, "pwd": PASSWORD, **extra})


async def audit_count(services: Services, action: str) -> int:
    async with services.sessions() as session:
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        return int(await session.scalar(query) or 0)


# -- the sign-up role ------------------------------------------------------------------------


async def test_a_new_account_holds_the_signup_role_and_its_permissions(
    client: Client, services: Services
) -> None:
    await add_role(services, "customer", "chat.use", "orders.use")
    response = await sign_up(client, "newbie")
    assert response.status == 201, response.text
    headers = bearer(await login(client, "newbie"))
    me = await client.get("/user/me", headers=headers)
    assert me.json()["roles"] == ["customer"]
    assert (await client.get("/api/orders", headers=headers)).status == 200
    async with services.sessions() as session:
        detail = await session.scalar(
            select(AuditEntry.detail).where(AuditEntry.action == "register")
        )
    assert detail == "role customer"


async def test_a_missing_signup_role_gives_no_role_and_one_warning(
    client: Client, services: Services, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(accounts, "_missing_signup_roles", set())
    with caplog.at_level(logging.WARNING, logger="mservices.accounts"):
        assert (await sign_up(client, "first")).status == 201
        assert (await sign_up(client, "second")).status == 201
    warnings = [r for r in caplog.records if "MSERVICES_SIGNUP_ROLE" in r.getMessage()]
    assert len(warnings) == 1
    assert "'customer'" in warnings[0].getMessage()
    me = await client.get("/user/me", headers=bearer(await login(client, "second")))
    assert me.json()["roles"] == []


async def test_without_a_signup_role_a_new_account_holds_none(
    tmp_path: Path, sqlite_url: str
) -> None:
    assert Settings(_env_file=None).signup_role == ""  # type: ignore[call-arg]
    async with app_client(make_settings(tmp_path, sqlite_url)) as (client, services):
        await add_role(services, "customer", "chat.use")
        assert (await sign_up(client, "plain")).status == 201
        me = await client.get("/user/me", headers=bearer(await login(client, "plain")))
        assert me.json()["roles"] == []


def test_make_run_serves_with_the_customer_signup_role_unless_one_is_set(
    project_dir: Path,
) -> None:
    makefile = (project_dir / "Makefile").read_text()
    assert "MSERVICES_SIGNUP_ROLE=$${MSERVICES_SIGNUP_ROLE-customer} $(BIN)/mservices serve" in (
        makefile
    )


# -- the home page -----------------------------------------------------------------------------


async def test_a_logged_in_user_without_menus_is_told_to_ask_an_administrator(
    client: Client,
) -> None:
    assert (await sign_up(client, "lonely")).status == 201
    browser = Browser(client)
    await browser.login("lonely", PASSWORD)
    page = await browser.get("/")
    assert page.status == 200
    assert NO_MENUS_FOR_YOU in page.text
    assert NO_MENUS_FOR_VISITORS not in page.text


async def test_a_user_without_menus_who_chose_english_is_told_in_english(client: Client) -> None:
    assert (await sign_up(client, "lonely")).status == 201
    browser = Browser(client)
    browser.cookies[LANGUAGE_COOKIE] = "en_US"
    await browser.login("lonely", PASSWORD)
    page = await browser.get("/")
    assert "Your roles have no visible menus yet; please ask an administrator." in page.text
    assert NO_MENUS_FOR_YOU not in page.text


async def test_a_visitor_without_menus_keeps_the_visitor_sentence(client: Client) -> None:
    page = await client.get("/")
    assert NO_MENUS_FOR_VISITORS in page.text
    assert NO_MENUS_FOR_YOU not in page.text


# -- the registration throttle -----------------------------------------------------------------


async def test_registrations_past_the_allowance_are_429_before_any_hash(
    client: Client, services: Services, monkeypatch: Any
) -> None:
    hashed: list[str] = []
    real_hash = services.passwords.hash

    async def counting_hash(password: str) -> str:
        hashed.append(password)
        return await real_hash(password)

    monkeypatch.setattr(services.passwords, "hash", counting_hash)
    statuses = [(await sign_up(client, f"bulk{n}")).status for n in range(3)]
    assert statuses == [201, 201, 201]
    refused = await sign_up(client, "bulk3")
    assert refused.status == 429
    assert refused.json()["code"] == "too_many_signups"
    assert 3590 < int(refused.headers["Retry-After"]) <= 3600
    assert len(hashed) == 3, "a refused registration costs no argon2 hash"
    assert await audit_count(services, "signup_throttled") == 1
    async with services.sessions() as session:
        names = await session.scalars(
            select(AuditEntry.actor).where(AuditEntry.action == "register")
        )
        assert sorted(names) == ["bulk0", "bulk1", "bulk2"]


async def test_a_taken_name_counts_against_the_allowance(client: Client) -> None:
    assert (await sign_up(client, "dup")).status == 201
    # More than name and pwd: a registration (exactly those two would log in, seed §4.3).
    assert (await sign_up(client, "dup", city="太原")).status == 409
    assert (await sign_up(client, "other")).status == 201
    assert (await sign_up(client, "third")).status == 429


async def test_a_refused_body_or_weak_password_does_not_count(client: Client) -> None:
    for _ in range(5):
        assert (await client.post("/user", json_body={"name": "x"})).status == 422
        weak = await client.post("/user", json_body={"name": "weakling", "pwd": "123"})
        assert weak.status == 422
    statuses = [(await sign_up(client, f"ok{n}")).status for n in range(4)]
    assert statuses == [201, 201, 201, 429]


async def test_logins_are_not_limited_by_the_registration_allowance(client: Client) -> None:
    for n in range(3):
        assert (await sign_up(client, f"user{n}")).status == 201
    assert (await sign_up(client, "user3")).status == 429
    for _ in range(5):
        await login(client, "user0")


@pytest.mark.redis
async def test_processes_sharing_redis_share_one_allowance(tmp_path: Path, sqlite_url: str) -> None:
    redis_url = service_url("MSERVICES_TEST_REDIS_URL", "Redis")
    settings = make_settings(
        tmp_path,
        sqlite_url,
        redis_url=redis_url,
        redis_prefix=f"mservices-test-signup-{tmp_path.name[-24:]}",
        signup_per_ip=3,
    )
    async with app_client(settings) as (first, first_services):
        async with app_client(settings) as (second, _):
            assert (await sign_up(first, "r0")).status == 201
            assert (await sign_up(second, "r1")).status == 201
            assert (await sign_up(first, "r2")).status == 201
            refused = await sign_up(second, "r3")
            assert refused.status == 429
            assert refused.json()["code"] == "too_many_signups"
            assert int(refused.headers["Retry-After"]) > 3000
        assert first_services.redis is not None
        keys = [k async for k in first_services.redis.scan_iter(match=f"{settings.redis_prefix}:*")]
        if keys:
            await first_services.redis.delete(*keys)

"""Two processes sharing one database and one Redis: revocations and throttling reach both.

Each "process" is a complete, separate set of services (own engine, caches, Redis connections)
served on its own port, which is what a second process would have.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tornado.httpserver import HTTPServer

from server.app import make_app
from server.services import Services, open_services
from tests.conftest import Client, make_settings, serve_app, service_url
from tests.server.handlers.test_user import PASSWORD, bearer, login, register

pytestmark = pytest.mark.redis

PROPAGATION_DEADLINE = 1.0


async def start_process(
    settings_kwargs: dict[str, object], tmp_path: Path, url: str
) -> tuple[Services, Client, HTTPServer]:
    settings = make_settings(tmp_path, url, **settings_kwargs)
    services = await open_services(settings)
    await asyncio.wait_for(services.invalidation.subscribed.wait(), timeout=5)
    server, base_url = await serve_app(make_app(settings, services))
    return services, Client(base_url), server


@pytest.fixture
async def two_processes(tmp_path: Path, sqlite_url: str) -> AsyncIterator[tuple[Client, Client]]:
    redis_url = service_url("MSERVICES_TEST_REDIS_URL", "Redis")
    shared = {
        "redis_url": redis_url,
        "redis_prefix": f"test-{secrets.token_hex(6)}",
        "cookie_secret": secrets.token_hex(32),
    }
    started = [await start_process(shared, tmp_path / name, sqlite_url) for name in ("a", "b")]
    try:
        yield started[0][1], started[1][1]
    finally:
        for services, client, server in started:
            client.close()
            server.stop()
            await services.close()


async def refused_within(client: Client, token: str, deadline: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        if (await client.get("/user/me", headers=bearer(token))).status == 401:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_logout_on_one_process_is_refused_by_the_other_within_a_second(
    two_processes: tuple[Client, Client],
) -> None:
    a, b = two_processes
    await register(a)
    token = await login(a)
    assert (await b.get("/user/me", headers=bearer(token))).status == 200, "cached on b"
    assert (await a.request("DELETE", "/user", headers=bearer(token))).status == 200
    assert (await a.get("/user/me", headers=bearer(token))).status == 401, "at once on a"
    assert await refused_within(b, token, PROPAGATION_DEADLINE)


async def test_a_profile_change_on_one_process_shows_on_the_other(
    two_processes: tuple[Client, Client],
) -> None:
    a, b = two_processes
    await register(a)
    token = await login(a)
    assert (await b.get("/user/me", headers=bearer(token))).json()["user"]["city"] is None
    await a.request("PUT", "/user", json_body={"city": "北京"}, headers=bearer(token))
    loop = asyncio.get_running_loop()
    end = loop.time() + PROPAGATION_DEADLINE
    city = None
    while loop.time() < end and city != "北京":
        city = (await b.get("/user/me", headers=bearer(token))).json()["user"]["city"]
        await asyncio.sleep(0.02)
    assert city == "北京"


async def test_login_failures_on_one_process_throttle_the_other(
    two_processes: tuple[Client, Client],
) -> None:
    a, b = two_processes
    await register(a)
    for _ in range(6):
        response = await a.post("/user/login", json_body={"name": "cxk", "pwd": "wrong guess"})
        assert response.status == 401
    locked = await b.post("/user/login", json_body={"name": "cxk", "pwd": PASSWORD})
    assert locked.status == 429
    assert int(locked.headers["Retry-After"]) >= 1

"""When Redis is down: logins and registrations still answer, throttling falls back to each
process, and a revocation reaches every process within the documented bound.

Two "processes" (complete services, each on its own port) share one SQLite database and a
``redis-server`` of the test's own, which the test stops (kill) or pauses (SIGSTOP). Time for
the outage rules is a fake clock the test moves; requests carry the test client's timeout, so a
paused Redis fails a test instead of hanging it. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tornado.httpserver import HTTPServer

from server.app import make_app
from server.logins import OUTAGE_TTL
from server.security.throttle import REDIS_COOLDOWN
from server.services import Services, open_services
from tests.conftest import Client, make_settings, serve_app
from tests.server.handlers.test_user import PASSWORD, bearer, login, register
from tests.server.realtime.conftest import form_login
from tests.server.security.conftest import RedisServer, redis_server

__all__ = ["redis_server"]  # a fixture used here, defined with the security fixtures

pytestmark = pytest.mark.redis

FREE_FAILURES = 2


class FakeClock:
    """Seconds that pass only when the test says so (shared by both processes)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Process:
    """One process: its services and a client of its HTTP server."""

    services: Services
    client: Client
    server: HTTPServer


@dataclass
class Cluster:
    """Two processes on one database and one Redis, and the controls of the outage."""

    a: Process
    b: Process
    redis: RedisServer
    clock: FakeClock
    prefix: str

    async def outage(self, how: str) -> None:
        """Stop or pause Redis."""
        if how == "stopped":
            self.redis.stop()
        else:
            self.redis.pause()

    async def recover(self, how: str) -> None:
        """Bring Redis back: a new server after a stop, the same one after a pause."""
        if how == "stopped":
            await self.redis.start()
        else:
            self.redis.resume()


@pytest.fixture
async def cluster(
    redis_server: RedisServer, tmp_path: Path, sqlite_url: str
) -> AsyncIterator[Cluster]:
    clock = FakeClock()
    prefix = f"test-{secrets.token_hex(6)}"
    shared = {
        "redis_url": redis_server.url,
        "redis_prefix": prefix,
        "cookie_secret": secrets.token_hex(32),
        "login_free_failures": FREE_FAILURES,
    }
    async with AsyncExitStack() as closing:  # everything opened is closed, even on failure
        closing.callback(redis_server.resume)  # runs first: closing must not wait on a pause
        processes = []
        for name in ("a", "b"):
            settings = make_settings(tmp_path / name, sqlite_url, **shared)
            services = await open_services(settings, clock=clock)
            closing.push_async_callback(services.close)
            await asyncio.wait_for(services.invalidation.subscribed.wait(), timeout=10)
            server, base_url = await serve_app(make_app(settings, services))
            closing.callback(server.stop)
            client = Client(base_url)
            closing.callback(client.close)
            processes.append(Process(services, client, server))
        yield Cluster(processes[0], processes[1], redis_server, clock, prefix)


async def until(condition: Callable[[], bool], *, within: float = 10.0) -> bool:
    """Poll ``condition`` until true; False after ``within`` s (a hang guard, not a timing)."""
    for _ in range(int(within / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def login_status(client: Client, name: str, pwd: str) -> int:
    """The status of ``POST /user/login``."""
    return (await client.post("/user/login", json_body={"name": name, "pwd": pwd})).status


async def me_status(client: Client, token: str) -> int:
    """The status of ``GET /user/me`` with ``token``."""
    return (await client.get("/user/me", headers=bearer(token))).status


OUTAGES = ["stopped", "paused"]


@pytest.mark.parametrize("how", OUTAGES)
async def test_logins_and_registrations_answer_while_redis_is_unreachable(
    cluster: Cluster, how: str
) -> None:
    client = cluster.a.client
    await register(client, "cxk")
    await cluster.outage(how)
    await register(client, "newcomer")  # 201
    assert await login_status(client, "cxk", PASSWORD) == 200
    assert await login_status(client, "cxk", "wrong password") == 401
    assert await login_status(client, "nobody", "wrong password") == 401
    await form_login(client, "newcomer", PASSWORD)  # the /login page: 302 with a session


async def test_the_fallback_is_logged_once_per_outage(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    client = cluster.a.client
    await register(client, "cxk")
    await cluster.outage("stopped")
    with caplog.at_level(logging.INFO, logger="mservices.throttle"):
        for _ in range(3):
            assert await login_status(client, "cxk", PASSWORD) == 200
            assert await login_status(client, "cxk", "wrong password") == 401
            cluster.clock.now += REDIS_COOLDOWN + 1  # Redis is tried again, still away
        await cluster.recover("stopped")
        assert await login_status(client, "cxk", PASSWORD) == 200
        assert await login_status(client, "cxk", PASSWORD) == 200
    assert caplog.text.count("Redis is unreachable") == 1
    assert caplog.text.count("Redis answers again") == 1


@pytest.mark.parametrize("how", OUTAGES)
async def test_failures_are_counted_per_process_during_an_outage_and_in_redis_after_it(
    cluster: Cluster, how: str
) -> None:
    a, b = cluster.a.client, cluster.b.client
    await register(a, "cxk")
    await cluster.outage(how)
    statuses = [await login_status(a, "cxk", "wrong") for _ in range(FREE_FAILURES + 2)]
    assert statuses[-1] == 429  # this process counts, and locks
    assert await login_status(b, "cxk", "wrong") == 401  # the other counts on its own

    await cluster.recover(how)
    cluster.clock.now += REDIS_COOLDOWN + 1
    statuses = [await login_status(a, "cxk", "wrong") for _ in range(FREE_FAILURES + 2)]
    assert statuses[-1] == 429
    assert await login_status(b, "cxk", PASSWORD) == 429  # shared again: B sees A's lockout
    redis = Redis.from_url(cluster.redis.url, socket_timeout=5)
    try:
        assert await redis.exists(f"{cluster.prefix}:login:ip:127.0.0.1") == 1
    finally:
        await redis.aclose()


@pytest.mark.parametrize("how", OUTAGES)
async def test_a_token_revoked_in_one_process_stops_working_in_another_within_the_bound(
    cluster: Cluster, how: str
) -> None:
    a, b = cluster.a.client, cluster.b.client
    await register(a, "cxk")
    token = await login(a, "cxk")
    assert await me_status(b, token) == 200  # now cached in B
    await cluster.outage(how)
    assert (await a.request("DELETE", "/user", headers=bearer(token))).status == 200
    assert await me_status(a, token) == 401  # at once where it was revoked
    cluster.clock.now += OUTAGE_TTL + 0.1  # the documented bound, and no further
    assert await me_status(b, token) == 401


async def test_a_revocation_right_after_redis_restarts_reaches_the_other_process_at_once(
    cluster: Cluster,
) -> None:
    a, b = cluster.a.client, cluster.b.client
    await register(a, "cxk")
    token = await login(a, "cxk")
    await cluster.redis.restart()
    healthy: list[Callable[[], bool]] = [
        cluster.a.services.invalidation.healthy,
        cluster.b.services.invalidation.healthy,
    ]
    assert await until(lambda: all(check() for check in healthy))
    assert await me_status(b, token) == 200  # cached in B again after its resubscription
    assert (await a.request("DELETE", "/user", headers=bearer(token))).status == 200
    assert await until_status(lambda: me_status(b, token), 401)


async def until_status(check: Callable[[], Awaitable[int]], status: int) -> bool:
    """Ask ``check`` until it answers ``status`` (the channel's delivery is asynchronous);
    False after about 5 s. The clock does not move: this is not the outage bound."""
    for _ in range(100):
        if await check() == status:
            return True
        await asyncio.sleep(0.05)
    return False

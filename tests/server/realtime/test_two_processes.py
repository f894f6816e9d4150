"""Two real ``mservices serve`` processes sharing the MariaDB test database and Redis: a WebSocket
user on process A and a TCP user on process B see each other's messages and agree on who is
online; both processes stop with exit code 0 on SIGTERM; a session revoked on A ends the TCP
connection it opened on B.

Needs ``MSERVICES_TEST_MYSQL_URL`` and ``MSERVICES_TEST_REDIS_URL`` (skipped with the reason
without them, failed under ``MSERVICES_TEST_REQUIRE_SERVICES=1``). Each test has its own Redis
prefix, and the database rows are deleted afterwards. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from server.realtime.websocket import CHAT_SUBPROTOCOL
from tests.conftest import Client
from tests.processes import HOST, Served, create_superuser, mservices, serve, server_env
from tests.server.realtime.conftest import app_prefix, delete_keys, form_login
from tests.server.realtime.test_tcp import GOODBYE, SESSION_ENDED, LineClient
from tests.server.realtime.test_websocket import Socket
from tests.server.security.conftest import ScratchRedis
from tests.server.test_cli import SERVE_TIMEOUT

pytestmark = [pytest.mark.mariadb, pytest.mark.redis]

ANN, BOB = "ann", "bob"
PASSWORDS = {ANN: "ann's correct horse battery", BOB: "bob's correct horse battery"}
WAIT = 10.0
"""The longest a single connection or read may take."""


@pytest.fixture
def database_url(mysql_url: str) -> str:
    """Only MariaDB: the processes share it (``engine`` deletes its rows after the test)."""
    return mysql_url


@pytest.fixture
async def redis_prefix(redis_scratch: ScratchRedis) -> AsyncIterator[str]:
    """The processes' ``MSERVICES_REDIS_PREFIX``; its keys are deleted after the test."""
    prefix = app_prefix(redis_scratch)
    try:
        yield prefix
    finally:
        await delete_keys(redis_scratch, prefix)


@pytest.fixture
def two_processes(
    tmp_path: Path,
    database_url: str,
    engine: AsyncEngine,
    redis_scratch: ScratchRedis,
    redis_prefix: str,
) -> Iterator[tuple[Served, Served]]:
    """Processes A and B on one database (migrated, with ANN and BOB) and one Redis prefix."""
    shared = {
        "MSERVICES_DATABASE_URL": database_url,
        "MSERVICES_COOKIE_SECRET": secrets.token_hex(32),
        "MSERVICES_REDIS_URL": redis_scratch.url,
        "MSERVICES_REDIS_PREFIX": redis_prefix,
        "MSERVICES_PASSWORD_TIME_COST": "1",
        "MSERVICES_PASSWORD_MEMORY_KIB": "8192",
    }
    env_a = server_env(MSERVICES_DATA_DIR=str(tmp_path / "a" / "data"), **shared)
    env_b = server_env(MSERVICES_DATA_DIR=str(tmp_path / "b" / "data"), **shared)
    mservices(tmp_path, env_a, "db", "upgrade")
    for name, password in PASSWORDS.items():
        create_superuser(tmp_path, env_a, name, password)
    with serve(tmp_path / "a", env_a) as a, serve(tmp_path / "b", env_b) as b:
        yield a, b


async def open_chat(served: Served, cookie: str) -> Socket:
    """``/message`` on ``served`` with the session ``cookie`` and the site's own Origin."""
    request = HTTPRequest(
        f"ws://{HOST}:{served.http_port}/message",
        headers={"Cookie": cookie, "Origin": served.base_url},
        request_timeout=WAIT,
    )
    connecting = websocket_connect(request, subprotocols=[CHAT_SUBPROTOCOL])
    return Socket(await asyncio.wait_for(connecting, WAIT))


@contextlib.asynccontextmanager
async def tcp_chat(served: Served) -> AsyncIterator[LineClient]:
    """A TCP chat client of ``served``, closed afterwards."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, served.tcp_port), WAIT)
    client = LineClient(reader, writer)
    try:
        yield client
    finally:
        await client.close()


async def stopped(served: Served) -> int:
    """The exit code of ``served`` (already sent SIGTERM), waited for off the event loop."""
    return await asyncio.to_thread(served.process.wait, SERVE_TIMEOUT)


async def test_a_websocket_user_on_a_and_a_tcp_user_on_b_chat_and_agree_on_presence(
    two_processes: tuple[Served, Served],
) -> None:
    a, b = two_processes
    http = Client(a.base_url)
    try:
        cookie = await form_login(http, ANN, PASSWORDS[ANN])
    finally:
        http.close()

    async with tcp_chat(b) as bob:
        assert (await bob.log_in(BOB, PASSWORDS[BOB]))[-1] == f"* online in lobby: {BOB}"

        ann = await open_chat(a, cookie)
        try:
            _, _, presence = await ann.joined()
            assert presence["users"] == [ANN, BOB], "B's user is online on A"
            await bob.until(f"* {ANN} joined lobby")

            await ann.own_message("hello from A")
            await bob.until(f"[lobby] {ANN}: hello from A")
            await bob.send("hello from B")
            heard, _ = await ann.until(lambda frame: frame["type"] == "message")
            assert (heard["user"], heard["text"]) == (BOB, "hello from B")

            await bob.send("/who")
            who = await bob.until("* online in lobby:")
            assert who[-1] == f"* online in lobby: {ANN}, {BOB}"

            a.process.send_signal(signal.SIGTERM)
            code, _ = await ann.closed()
            assert code == 1001
        finally:
            ann.close()
        assert await stopped(a) == 0, a.stderr()

        await bob.until(f"* {ANN} left lobby")  # A took its presence out of Redis on the way
        b.process.send_signal(signal.SIGTERM)
        assert (await bob.rest())[-1] == GOODBYE
        assert await stopped(b) == 0, b.stderr()


async def test_revoking_a_users_sessions_on_a_ends_their_tcp_connection_on_b(
    two_processes: tuple[Served, Served],
) -> None:
    a, b = two_processes
    http = Client(a.base_url)
    try:
        async with tcp_chat(b) as bob:
            await bob.log_in(BOB, PASSWORDS[BOB])
            tokens = {}
            for name in (ANN, BOB):
                login = await http.post(
                    "/user/login", json_body={"name": name, "pwd": PASSWORDS[name]}
                )
                assert login.status == 200, login.text
                tokens[name] = {"Authorization": f"Bearer {login.json()['token']}"}
            me = await http.get("/user/me", headers=tokens[BOB])
            listed = await http.get("/user/sessions", headers=tokens[BOB])
            assert "tcp" in [item["device"] for item in listed.json()["items"]], listed.text

            bob_id = me.json()["user"]["id"]
            revoked = await http.request(
                "DELETE", f"/api/users/{bob_id}/sessions", headers=tokens[ANN]
            )
            assert revoked.status == 200, revoked.text
            assert revoked.json()["revoked"] == 2, "the API session and the TCP one"
            assert (await asyncio.wait_for(bob.rest(), WAIT))[-1] == SESSION_ENDED
    finally:
        http.close()

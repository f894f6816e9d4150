"""No chat message is lost through a Redis restart: two real ``mservices serve`` processes on
the MariaDB test database and a ``redis-server`` of the test's own (the shared one is never
touched), with two members on each process sending a steady stream while Redis is killed and
started again. Afterwards every member has received every stored message, once, and each
sender's messages in the order they were sent.

Needs ``MSERVICES_TEST_MYSQL_URL``, ``MSERVICES_TEST_REDIS_URL`` (the marker's service) and the
``redis-server`` executable. No timing is asserted: every wait is for a condition, bounded only
so that a lost message fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from repositories.chat import ChatRepository
from repositories.db import make_session_factory
from server.realtime.websocket import CHAT_SUBPROTOCOL
from tests.conftest import Client
from tests.processes import HOST, Served, create_superuser, mservices, serve, server_env
from tests.server.realtime.conftest import form_login
from tests.server.security.conftest import RedisServer, redis_server

__all__ = ["redis_server"]  # a fixture used here, defined with the security fixtures

pytestmark = [pytest.mark.mariadb, pytest.mark.redis]

PASSWORD = "correct horse battery staple"
ON_A, ON_B = ("ann", "bob"), ("cat", "dan")
ROOM = "restart"
PAUSE = 0.15
"""Seconds between a member's messages: a steady stream under the 10 a second limit."""
WAIT = 90.0
"""The longest any one condition may take (a guard against hanging, not a timing)."""
OUTAGE = 20
"""Messages each member sends while Redis is down: about 3 s, long enough for the subscribers'
backoff to grow past a second (a publish that succeeds cuts it short)."""
TEXT = re.compile(r"(?P<sender>[a-z]+) (?P<number>\d+)\Z")


@pytest.fixture
def database_url(mysql_url: str) -> str:
    """Only MariaDB: the processes share it (``engine`` deletes its rows after the test)."""
    return mysql_url


@pytest.fixture
def two_processes(
    tmp_path: Path, database_url: str, engine: AsyncEngine, redis_server: RedisServer
) -> Iterator[tuple[Served, Served]]:
    """Processes A and B on one database (migrated, with the four members) and the test's own
    Redis."""
    shared = {
        "MSERVICES_DATABASE_URL": database_url,
        "MSERVICES_COOKIE_SECRET": secrets.token_hex(32),
        "MSERVICES_REDIS_URL": redis_server.url,
        "MSERVICES_REDIS_PREFIX": f"restart-{secrets.token_hex(4)}",
        "MSERVICES_PASSWORD_TIME_COST": "1",
        "MSERVICES_PASSWORD_MEMORY_KIB": "8192",
    }
    env_a = server_env(MSERVICES_DATA_DIR=str(tmp_path / "a" / "data"), **shared)
    env_b = server_env(MSERVICES_DATA_DIR=str(tmp_path / "b" / "data"), **shared)
    mservices(tmp_path, env_a, "db", "upgrade")
    for name in (*ON_A, *ON_B):
        create_superuser(tmp_path, env_a, name, PASSWORD)
    with serve(tmp_path / "a", env_a) as a, serve(tmp_path / "b", env_b) as b:
        yield a, b


@dataclass(eq=False)
class Member:
    """A chat WebSocket (JSON frames) that records every message it is given, in order."""

    name: str
    connection: WebSocketClientConnection
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Messages in the order received: the join's history, then live ones."""
    presence: list[str] = field(default_factory=list)
    sent = 0
    reader: asyncio.Task[None] | None = None

    async def read_forever(self) -> None:
        """Record frames until the socket closes."""
        while (raw := await self.connection.read_message()) is not None:
            assert isinstance(raw, str)
            frame = json.loads(raw)
            if frame["type"] == "history":
                self.messages.extend(frame["messages"])
            elif frame["type"] == "message":
                self.messages.append(frame)
            elif frame["type"] == "presence":
                self.presence = frame["users"]

    async def stream(self, stop: asyncio.Event) -> None:
        """Send ``"NAME N"`` for N = 0, 1, ... every PAUSE seconds until ``stop``."""
        while not stop.is_set():
            text = f"{self.name} {self.sent}"
            await self.connection.write_message(json.dumps({"type": "message", "text": text}))
            self.sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PAUSE)

    def joined(self) -> bool:
        """Whether it is in the room: the hub sends who is online last when joining."""
        return bool(self.presence)

    def heard(self, sender: str) -> int:
        """How many of ``sender``'s messages this member has received."""
        return sum(1 for message in self.messages if message["user"] == sender)

    def heard_after(self, sender: str, number: int) -> bool:
        """Whether this member received a message ``sender`` sent as number ``number`` or later."""
        return any(
            message["user"] == sender and sequence(message) >= number for message in self.messages
        )


def sequence(message: dict[str, Any]) -> int:
    """The number a member gave its message (``"ann 17"``: 17)."""
    match = TEXT.match(message["text"])
    assert match is not None and match["sender"] == message["user"], message
    return int(match["number"])


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (at most WAIT seconds: then the test fails saying ``what``)."""
    for _ in range(int(WAIT / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition(), f"gave up waiting: {what}"


@contextlib.asynccontextmanager
async def members(a: Served, b: Served) -> AsyncIterator[list[Member]]:
    """The four members, joined (ann and bob on A, cat and dan on B); closed afterwards."""
    http = Client(a.base_url)
    opened: list[Member] = []
    try:
        for served, names in ((a, ON_A), (b, ON_B)):
            for name in names:
                cookie = await form_login(http, name, PASSWORD)
                request = HTTPRequest(
                    f"ws://{HOST}:{served.http_port}/message?room={ROOM}",
                    headers={"Cookie": cookie, "Origin": served.base_url},
                    request_timeout=WAIT,
                )
                connection = await asyncio.wait_for(
                    websocket_connect(request, subprotocols=[CHAT_SUBPROTOCOL]), WAIT
                )
                member = Member(name, connection)
                member.reader = asyncio.ensure_future(member.read_forever())
                opened.append(member)
                await until(member.joined, f"{name} joined")
        assert opened[-1].presence == sorted((*ON_A, *ON_B)), "the last sees everyone online"
        yield opened
    finally:
        http.close()
        for member in opened:
            member.connection.close()
            if member.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(member.reader, WAIT)


async def test_every_member_gets_every_message_once_and_in_order_through_a_redis_restart(
    two_processes: tuple[Served, Served], redis_server: RedisServer, engine: AsyncEngine
) -> None:
    a, b = two_processes
    async with members(a, b) as everyone:
        stop = asyncio.Event()
        streams = [asyncio.ensure_future(member.stream(stop)) for member in everyone]
        try:
            await until(
                lambda: all(m.heard(s.name) >= 5 for m in everyone for s in everyone),
                "the stream flows between the processes",
            )
            before = {member.name: member.sent for member in everyone}
            redis_server.stop()
            await until(
                lambda: all(m.sent >= before[m.name] + OUTAGE for m in everyone),
                "every member sends during the outage",
            )
            await redis_server.start()  # a new, empty server on the same port
            restarted = {member.name: member.sent for member in everyone}
            await until(
                lambda: all(
                    m.heard_after(s.name, restarted[s.name] + 3) for m in everyone for s in everyone
                ),
                "messages sent after the restart reach every member",
            )
        finally:
            stop.set()
            await asyncio.gather(*streams)
        sent = sum(member.sent for member in everyone)

        sessions = make_session_factory(engine)

        async def stored_ids() -> list[int]:
            async with sessions() as session:
                stored = await ChatRepository(session).recent(ROOM, limit=sent + 1)
            return [message.id for message in stored]

        stored: list[int] = []
        for _ in range(int(WAIT / 0.1)):  # the processes write history in the background
            stored = await stored_ids()
            if len(stored) >= sent:
                break
            await asyncio.sleep(0.1)
        assert len(stored) == sent, f"{len(stored)} of {sent} messages stored"
        await until(
            lambda: all({m["id"] for m in member.messages} >= set(stored) for member in everyone),
            "every member received every stored message",
        )

    for member in everyone:
        ids = [message["id"] for message in member.messages]
        assert len(ids) == len(set(ids)), f"{member.name} got a message twice"
        assert set(ids) == set(stored), f"{member.name} got a message that was not stored"
        for sender in everyone:
            numbers = [sequence(m) for m in member.messages if m["user"] == sender.name]
            assert numbers == list(range(sender.sent)), f"{sender.name}'s, as {member.name} saw"
    for served in (a, b):
        assert "chat channel lost" in served.stderr(), "the restart was noticed"

"""The Redis bus and presence: several "processes" (instances with clients of their own) sharing
one Redis through a random channel and key prefix.

Tests without a Redis server point a client at a closed port; the others need
``MSERVICES_TEST_REDIS_URL`` and delete their keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tornado.testing import bind_unused_port

from server import services as services_module
from server.realtime import redis_bus
from server.realtime.bus import LocalBus
from server.realtime.history import ChatHistory
from server.realtime.hub import Hub, encode
from server.realtime.presence import LocalPresence
from server.realtime.redis_bus import RedisBus
from server.realtime.redis_presence import RedisPresence
from server.services import Services, open_services
from tests.conftest import make_settings
from tests.server.realtime.conftest import app_prefix, delete_keys
from tests.server.security.conftest import ScratchRedis

ROOM = "lobby"


@pytest.fixture
async def closing() -> AsyncIterator[AsyncExitStack]:
    """Closes what a test started, even when one close fails."""
    async with AsyncExitStack() as stack:
        yield stack


@pytest.fixture
def dead_redis() -> Redis:
    """A client of a port nobody listens on (closed by ``closed_port_client``)."""
    sock, port = bind_unused_port()
    sock.close()
    return Redis.from_url(f"redis://127.0.0.1:{port}", socket_connect_timeout=1)


@pytest.fixture
async def closed_port_client(dead_redis: Redis) -> AsyncIterator[Redis]:
    """``dead_redis``, closed after the test."""
    try:
        yield dead_redis
    finally:
        await dead_redis.aclose()


@dataclass(eq=False)
class Process:
    """One process's bus and what its hub would have received."""

    bus: RedisBus
    frames: list[tuple[str, str]] = field(default_factory=list)
    resyncs: int = 0

    def __post_init__(self) -> None:
        self.bus.subscribe(lambda room, payload: self.frames.append((room, payload)))
        self.bus.on_resync(self._resynced)

    async def _resynced(self) -> None:
        self.resyncs += 1


@pytest.fixture
def channel(redis_scratch: ScratchRedis) -> str:
    """The chat channel of this test."""
    return redis_scratch.prefix + "chat"


@pytest.fixture
def processes(
    redis_scratch: ScratchRedis, channel: str, closing: AsyncExitStack
) -> Callable[..., Process]:
    """Builds a process on the test channel (started by ``started``, closed afterwards)."""

    def build(**client_options: Any) -> Process:
        process = Process(RedisBus(redis_scratch.connect(**client_options), channel=channel))
        closing.push_async_callback(process.bus.close)
        return process

    return build


async def started(*processes: Process) -> None:
    """Start the subscribers and wait (at most 5 s) until they listen."""
    for process in processes:
        await process.bus.start()
    for process in processes:
        await asyncio.wait_for(process.bus.subscribed.wait(), timeout=5)


async def until(condition: Callable[[], bool], *, within: float = 1.0) -> bool:
    """Poll ``condition`` until it holds; False after ``within`` seconds."""
    for _ in range(int(within / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def kill_connections(
    redis_scratch: ScratchRedis, name: str, *, pubsub_only: bool = False
) -> int:
    """Cut the connections (or only the pub/sub ones) of the client called ``name``, and no one
    else's (``CLIENT KILL ID``: the server is shared); returns how many were cut."""
    clients = await redis_scratch.client.client_list(_type="pubsub" if pubsub_only else None)
    ours = [client["id"] for client in clients if client.get("name") == name]
    for client_id in ours:
        await redis_scratch.client.client_kill_filter(_id=client_id)
    return len(ours)


async def kill_subscriber(redis_scratch: ScratchRedis, name: str) -> None:
    """Cut the pub/sub connection of the client called ``name``, and no one else's."""
    assert await kill_connections(redis_scratch, name, pubsub_only=True) == 1


def client_name(redis_scratch: ScratchRedis) -> str:
    """A client name unique to this test (CLIENT KILL must not touch other suites)."""
    return "mservices-test-" + redis_scratch.prefix.split(":")[1]


# -- the bus without Redis -----------------------------------------------------------------


async def test_publish_while_redis_is_unreachable_still_delivers_locally(
    closed_port_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    process = Process(RedisBus(closed_port_client, channel="mservices-test:nowhere"))
    with caplog.at_level(logging.WARNING, logger="mservices.chat"):
        await process.bus.publish(ROOM, "first")
        await process.bus.publish(ROOM, "second")
    assert process.frames == [(ROOM, "first"), (ROOM, "second")]
    assert process.bus.unpublished == 2
    assert caplog.text.count("chat frames reach this process only") == 1, "once per outage"


async def test_a_subscriber_that_cannot_connect_keeps_retrying_until_closed(
    closed_port_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    before = asyncio.all_tasks()
    process = Process(RedisBus(closed_port_client, channel="mservices-test:nowhere"))
    with caplog.at_level(logging.WARNING, logger="mservices.chat"):
        await process.bus.start()
        assert await until(lambda: caplog.text.count("chat channel lost") >= 2, within=5.0)
    assert not process.bus.subscribed.is_set()
    assert process.resyncs == 0
    await process.bus.close()
    assert asyncio.all_tasks() == before
    await process.bus.close()  # a second close is harmless


async def test_a_failing_subscriber_does_not_stop_the_others(
    closed_port_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    bus = RedisBus(closed_port_client, channel="mservices-test:nowhere")
    heard: list[str] = []

    def broken(room: str, payload: str) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(lambda room, payload: heard.append(payload))
    with caplog.at_level(logging.ERROR, logger="mservices.chat"):
        await bus.publish(ROOM, "frame")
    assert heard == ["frame"]
    assert "a chat bus subscriber failed" in caplog.text


async def test_close_runs_the_close_callbacks_once_even_when_one_fails(
    closed_port_client: Redis,
) -> None:
    bus = RedisBus(closed_port_client)
    closed: list[str] = []

    async def broken() -> None:
        raise RuntimeError("close bug")

    async def fine() -> None:
        closed.append("fine")

    bus.on_close(broken)
    bus.on_close(fine)
    await bus.close()
    await bus.close()
    assert closed == ["fine"]


# -- the bus with Redis --------------------------------------------------------------------


@pytest.mark.redis
async def test_a_frame_published_on_one_process_reaches_the_other_within_a_second(
    processes: Callable[..., Process],
) -> None:
    a, b = processes(), processes()
    await started(a, b)
    await a.bus.publish(ROOM, '{"type":"message"}')
    assert a.frames == [(ROOM, '{"type":"message"}')], "the publisher's own at once"
    assert await until(lambda: bool(b.frames), within=1.0)
    assert b.frames == [(ROOM, '{"type":"message"}')]


@pytest.mark.redis
async def test_the_publisher_delivers_its_own_frame_exactly_once(
    processes: Callable[..., Process],
) -> None:
    a, b = processes(), processes()
    await started(a, b)
    await a.bus.publish(ROOM, "from a")
    assert await until(lambda: bool(b.frames))
    # One channel's messages arrive in order: once A hears B's later frame, its echo is past.
    await b.bus.publish("other", "from b")
    assert await until(lambda: ("other", "from b") in a.frames)
    assert a.frames == [(ROOM, "from a"), ("other", "from b")]
    assert b.frames == [(ROOM, "from a"), ("other", "from b")]


@pytest.mark.redis
async def test_the_payload_arrives_byte_identical(processes: Callable[..., Process]) -> None:
    a, b = processes(), processes()
    await started(a, b)
    payload = json.dumps(
        {"text": 'héllo "quoted" \\ \n\u2028 \U0001f600 \x00 </script>', "id": 2**62},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    await a.bus.publish("salle 😀", payload)
    assert await until(lambda: bool(b.frames))
    [(room, received)] = b.frames
    assert room == "salle 😀"
    assert received.encode() == payload.encode()


@pytest.mark.redis
@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[1, 2]",
        b'{"origin": "elsewhere", "room": "lobby"}',
        b'{"origin": "elsewhere", "room": "lobby", "payload": 42}',
        b'{"origin": "elsewhere", "room": ["lobby"], "payload": "x"}',
        b"[" * 100_000,
    ],
    ids=[
        "not-json",
        "not-utf8",
        "null",
        "a-list",
        "no-payload",
        "payload-not-text",
        "room-not-text",
        "deeply-nested-json",
    ],
)
async def test_a_malformed_message_is_ignored_and_later_frames_still_arrive(
    processes: Callable[..., Process],
    redis_scratch: ScratchRedis,
    channel: str,
    garbage: bytes,
) -> None:
    a, b = processes(), processes()
    await started(a, b)
    await redis_scratch.client.publish(channel, garbage)
    await a.bus.publish(ROOM, "after")
    assert await until(lambda: bool(b.frames))
    assert b.frames == [(ROOM, "after")]


@pytest.mark.redis
async def test_a_killed_subscriber_resubscribes_resyncs_and_hears_later_frames(
    processes: Callable[..., Process], redis_scratch: ScratchRedis
) -> None:
    name = client_name(redis_scratch)
    a, b = processes(), processes(client_name=name)
    await started(a, b)
    assert b.resyncs == 1, "resync on the first subscription too"
    await kill_subscriber(redis_scratch, name)

    assert await until(lambda: b.resyncs == 2, within=5.0)
    await asyncio.wait_for(b.bus.subscribed.wait(), timeout=5)
    await a.bus.publish(ROOM, "after the reconnect")
    assert await until(lambda: bool(b.frames))
    assert b.frames == [(ROOM, "after the reconnect")]


@pytest.mark.redis
async def test_after_close_no_task_is_left(redis_scratch: ScratchRedis, channel: str) -> None:
    before = asyncio.all_tasks()
    process = Process(RedisBus(redis_scratch.connect(), channel=channel))
    await started(process)
    await asyncio.wait_for(process.bus.synced.wait(), timeout=5)
    assert len(asyncio.all_tasks() - before) == 2, "the subscriber and the beat"
    await process.bus.close()
    assert asyncio.all_tasks() == before
    assert not process.bus.subscribed.is_set()


# -- no loss: the backlog, and the fill after a resubscription ------------------------------


@dataclass(eq=False)
class Recovery:
    """What a hub would do for its bus's fill: record each fill (held at ``gate`` until it is
    set) and answer hellos with ``unstored``."""

    process: Process
    unstored: list[tuple[str, str]] = field(default_factory=list)
    fills: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)
    filling: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()
        self.process.bus.recover_with(self.fill, lambda after: list(self.unstored))

    async def fill(self, after: int, unstored: list[tuple[str, str]]) -> None:
        self.fills.append((after, unstored))
        self.filling.set()
        await self.gate.wait()
        self.process.frames.append(("fill", "done"))


async def knows(process: Process, other: Process) -> None:
    """Wait (at most 5 s) until ``process`` has heard ``other``'s beat: it waits for its answer
    after a resubscription."""
    assert await until(lambda: other.bus.origin in process.bus._peers, within=5.0)


@pytest.fixture
async def channel_log(redis_scratch: ScratchRedis, channel: str) -> AsyncIterator[list[Any]]:
    """Every message published on the test channel, decoded, as it goes by."""
    heard: list[Any] = []

    async def listen() -> None:
        async with redis_scratch.client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(channel)
            subscribed.set()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    heard.append(json.loads(message["data"]))

    subscribed = asyncio.Event()
    task = asyncio.ensure_future(listen())
    await asyncio.wait_for(subscribed.wait(), 5)
    try:
        yield heard
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.redis
async def test_frames_redis_refused_go_out_again_in_order_before_newer_ones(
    processes: Callable[..., Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = processes(), processes()
    await started(a, b)
    redis = a.bus._channel.redis

    async def refused(*args: Any, **kwargs: Any) -> int:
        raise RedisConnectionError("Redis is away")

    monkeypatch.setattr(redis, "publish", refused)
    await a.bus.publish(ROOM, "first")
    await a.bus.publish(ROOM, "second")
    assert a.bus.unpublished == 2 and b.frames == []
    monkeypatch.undo()
    await a.bus.publish(ROOM, "third")  # behind the two: the next beat publishes all three

    assert await until(lambda: len(b.frames) == 3, within=5.0)
    assert b.frames == [(ROOM, "first"), (ROOM, "second"), (ROOM, "third")]
    assert a.frames == b.frames, "delivered here at once, and once"


@pytest.mark.redis
async def test_a_resubscribed_process_fills_with_the_others_unstored_frames_then_resumes(
    processes: Callable[..., Process], redis_scratch: ScratchRedis
) -> None:
    name = client_name(redis_scratch)
    a, b = processes(), processes(client_name=name)
    on_a, on_b = Recovery(a, unstored=[(ROOM, "not stored by a yet")]), Recovery(b)
    await started(a, b)
    await knows(b, a)
    await asyncio.wait_for(b.bus.synced.wait(), 5)
    on_b.gate.clear()
    on_b.filling.clear()

    await kill_subscriber(redis_scratch, name)
    await asyncio.wait_for(on_b.filling.wait(), 10)
    await a.bus.publish(ROOM, "live during the fill")
    assert await until(lambda: b.bus._held == [(ROOM, "live during the fill")], within=5.0)
    assert not b.bus.synced.is_set()
    assert b.frames == [("fill", "done")], "only the fill of its start"
    on_b.gate.set()

    await asyncio.wait_for(b.bus.synced.wait(), 5)
    after, unstored = on_b.fills[-1]
    assert unstored == [(ROOM, "not stored by a yet")]
    assert after > 0
    assert b.frames == [("fill", "done"), ("fill", "done"), (ROOM, "live during the fill")]
    assert len(on_a.fills) == 1, "a filled once, when it started"


@pytest.mark.redis
async def test_a_process_that_subscribed_after_our_hello_is_asked_again(
    processes: Callable[..., Process],
    redis_scratch: ScratchRedis,
    channel: str,
    channel_log: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_bus, "FILL_WAIT", 60.0)
    name = client_name(redis_scratch)
    b = processes(client_name=name)
    Recovery(b)
    await started(b)
    await asyncio.wait_for(b.bus.synced.wait(), 5)
    await redis_scratch.client.publish(channel, json.dumps({"origin": "late", "beat": 1}))
    assert await until(lambda: "late" in b.bus._peers)

    said = len(hellos(channel_log, b))  # when it started
    await kill_subscriber(redis_scratch, name)  # b says hello; "late" cannot hear it yet
    assert await until(lambda: len(hellos(channel_log, b)) == said + 1, within=5.0)
    await redis_scratch.client.publish(  # "late" subscribes and says its own hello
        channel, json.dumps({"origin": "late", "hello": "its-nonce", "after": 0})
    )

    assert await until(lambda: len(hellos(channel_log, b)) == said + 2, within=5.0)
    first, again = hellos(channel_log, b)[said:]
    assert again["hello"] == first["hello"] and again["after"] == first["after"]
    assert await until(lambda: any(m.get("to") == "late" for m in channel_log))
    [answer] = [m for m in channel_log if m.get("to") == "late"]
    assert (answer["reply"], answer["frames"]) == ("its-nonce", [])
    assert not b.bus.synced.is_set(), "still waiting for late's answer"
    await redis_scratch.client.publish(
        channel,
        json.dumps({"origin": "late", "to": b.bus.origin, "reply": first["hello"], "frames": []}),
    )
    await asyncio.wait_for(b.bus.synced.wait(), 5)


def hellos(channel_log: list[Any], process: Process) -> list[dict[str, Any]]:
    """The hellos ``process`` published, in order."""
    return [m for m in channel_log if m.get("origin") == process.bus.origin and "hello" in m]


@pytest.mark.redis
async def test_a_process_that_said_bye_is_not_waited_for(
    processes: Callable[..., Process], redis_scratch: ScratchRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_bus, "FILL_WAIT", 60.0)
    name = client_name(redis_scratch)
    a, b = processes(), processes(client_name=name)
    Recovery(b)
    await started(a, b)
    await knows(b, a)
    await a.bus.close()
    assert await until(lambda: a.bus.origin not in b.bus._peers)

    await kill_subscriber(redis_scratch, name)

    await asyncio.wait_for(b.bus.synced.wait(), 10)


@pytest.mark.redis
async def test_a_process_that_never_answers_holds_the_fill_for_fill_wait_at_most(
    processes: Callable[..., Process],
    redis_scratch: ScratchRedis,
    channel: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(redis_bus, "FILL_WAIT", 0.5)
    name = client_name(redis_scratch)
    b = processes(client_name=name)
    on_b = Recovery(b)
    await started(b)
    await redis_scratch.client.publish(channel, json.dumps({"origin": "crashed", "beat": 1}))
    assert await until(lambda: "crashed" in b.bus._peers)
    await asyncio.wait_for(b.bus.synced.wait(), 5)
    fills = len(on_b.fills)

    with caplog.at_level(logging.WARNING, logger="mservices.chat"):
        await kill_subscriber(redis_scratch, name)
        assert await until(lambda: len(on_b.fills) > fills, within=10.0)
        await asyncio.wait_for(b.bus.synced.wait(), 5)
    assert "1 process(es) did not answer" in caplog.text


# -- two hubs ------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeMember:
    """A connection that keeps what it was sent."""

    user: str
    frames: list[dict[str, Any]] = field(default_factory=list)

    def send(self, payload: str) -> None:
        self.frames.append(json.loads(payload))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == kind]


async def received(member: FakeMember, kind: str, count: int = 1) -> bool:
    """Wait (at most 1 s) until ``member`` has ``count`` frames of ``kind``."""
    return await until(lambda: len(member.kinds(kind)) >= count)


@pytest.mark.redis
async def test_two_hubs_share_messages_and_presence_through_redis(
    redis_scratch: ScratchRedis,
    channel: str,
    sessions: async_sessionmaker[AsyncSession],
    closing: AsyncExitStack,
) -> None:
    history = ChatHistory(sessions)
    history.start()
    closing.push_async_callback(history.close)
    hubs = []
    for _ in range(2):
        bus = RedisBus(redis_scratch.connect(), channel=channel)
        presence = RedisPresence(redis_scratch.connect(), prefix=redis_scratch.prefix + "app")
        bus.on_resync(presence.resync)
        bus.on_close(presence.close)
        closing.push_async_callback(bus.close)
        await presence.start()
        await bus.start()
        await asyncio.wait_for(bus.subscribed.wait(), timeout=5)
        hubs.append(Hub(bus, presence, history))
    a, b = hubs

    ada_on_a, bob_on_b = FakeMember("ada"), FakeMember("bob")
    await a.join(ada_on_a, ROOM)
    await b.join(bob_on_b, ROOM)
    assert await received(ada_on_a, "join", 2)
    assert [frame["user"] for frame in ada_on_a.kinds("join")] == ["ada", "bob"]
    assert bob_on_b.kinds("presence")[-1]["users"] == ["ada", "bob"]

    ada_on_b = FakeMember("ada")  # a second tab, on the other process
    await b.join(ada_on_b, ROOM)
    assert ada_on_b.kinds("presence")[-1]["users"] == ["ada", "bob"]

    message_id = await a.say("ada", ROOM, "hello from a")
    for member in (bob_on_b, ada_on_b):
        assert await received(member, "message")
        [message] = member.kinds("message")
        assert (message["id"], message["user"], message["text"]) == (
            message_id,
            "ada",
            "hello from a",
        )
    assert [frame["text"] for frame in ada_on_a.kinds("message")] == ["hello from a"]

    await a.leave(ada_on_a, ROOM)  # ada is still on b: nobody hears she left
    assert await a.online(ROOM) == await b.online(ROOM) == ["ada", "bob"]
    await b.leave(ada_on_b, ROOM)
    assert await received(bob_on_b, "leave")
    assert await a.online(ROOM) == await b.online(ROOM) == ["bob"]

    await a.say("bob", ROOM, "last")  # once bob hears it, every earlier frame has arrived
    assert await received(bob_on_b, "message", 2)
    assert [frame["user"] for frame in ada_on_a.kinds("join")] == ["ada", "bob"]
    assert [frame["user"] for frame in bob_on_b.kinds("join")] == ["bob"], "ada's tab: silent"
    assert [frame["user"] for frame in bob_on_b.kinds("leave")] == ["ada"]
    assert ada_on_a.kinds("leave") == []


# -- a process cut off from Redis -----------------------------------------------------------


@pytest.mark.redis
async def test_a_process_whose_redis_connections_are_cut_restores_presence_and_delivery(
    tmp_path: Path, sqlite_url: str, redis_scratch: ScratchRedis, closing: AsyncExitStack
) -> None:
    name = client_name(redis_scratch)
    prefix = app_prefix(redis_scratch)
    closing.push_async_callback(delete_keys, redis_scratch, prefix)  # runs after the closes
    opened: list[Services] = []
    for label, query in (("a", f"?client_name={name}"), ("b", "")):
        settings = make_settings(
            tmp_path / label, sqlite_url, redis_url=redis_scratch.url + query, redis_prefix=prefix
        )
        services = await open_services(settings)
        closing.push_async_callback(services.close)
        assert isinstance(services.hub.bus, RedisBus)
        await asyncio.wait_for(services.hub.bus.subscribed.wait(), timeout=5)
        opened.append(services)
    a, b = (services.hub for services in opened)
    ada, bob = FakeMember("ada"), FakeMember("bob")
    await a.join(ada, ROOM)
    await b.join(bob, ROOM)
    assert await received(ada, "join", 2)
    key = f"{prefix}:presence:{ROOM}"
    await redis_scratch.client.hdel(key, "ada")  # as if Redis lost it during the outage
    assert await b.online(ROOM) == ["bob"]
    seen = len(ada.kinds("presence")), len(bob.kinds("presence"))

    # The chat subscriber, the invalidation subscriber and the pooled connections of A.
    assert await kill_connections(redis_scratch, name) >= 3

    assert await until(lambda: len(ada.kinds("presence")) > seen[0], within=5.0)
    assert ada.kinds("presence")[-1]["users"] == ["ada", "bob"], "told locally"
    assert await until(lambda: len(bob.kinds("presence")) > seen[1], within=5.0)
    assert bob.kinds("presence")[-1]["users"] == ["ada", "bob"], "told through Redis"
    assert await b.online(ROOM) == ["ada", "bob"]
    assert await redis_scratch.client.hget(key, "ada") is not None
    assert await redis_scratch.client.pttl(key) > 0, "presence keys expire"

    await a.say("ada", ROOM, "from a after the outage")
    assert await received(bob, "message")
    assert bob.kinds("message")[-1]["text"] == "from a after the outage"
    await b.say("bob", ROOM, "from b after the outage")
    assert await received(ada, "message", 2)
    assert ada.kinds("message")[-1]["text"] == "from b after the outage"


# -- services ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_services_choose_the_redis_bus_and_presence_when_redis_is_configured(
    tmp_path: Path, sqlite_url: str, redis_scratch: ScratchRedis
) -> None:
    prefix = app_prefix(redis_scratch)
    settings = make_settings(tmp_path, sqlite_url, redis_url=redis_scratch.url, redis_prefix=prefix)
    before = asyncio.all_tasks()
    services = await open_services(settings)
    try:
        assert isinstance(services.hub.bus, RedisBus)
        assert isinstance(services.hub.presence, RedisPresence)
        await asyncio.wait_for(services.hub.bus.subscribed.wait(), timeout=5)
        await services.hub.presence.join(ROOM, "ada")
        assert await redis_scratch.client.exists(f"{prefix}:presence:{ROOM}")
    finally:
        await services.close()
        keys = [key async for key in redis_scratch.client.scan_iter(match=prefix + "*")]
        if keys:
            await redis_scratch.client.delete(*keys)
    assert asyncio.all_tasks() == before, "the subscriber and the heartbeat are stopped"
    assert keys == [], "closing removed this process's presence"


async def test_services_keep_the_local_bus_and_presence_without_redis(
    tmp_path: Path, sqlite_url: str
) -> None:
    services = await open_services(make_settings(tmp_path, sqlite_url))
    try:
        assert isinstance(services.hub.bus, LocalBus)
        assert isinstance(services.hub.presence, LocalPresence)
    finally:
        await services.close()


@pytest.fixture
async def silent_redis_url() -> AsyncIterator[str]:
    """A redis:// URL whose server accepts connections and never answers, as Redis behind a
    network partition does (nothing refuses, nothing replies)."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in accepted:
            writer.transport.abort()
        await server.wait_closed()


async def test_with_redis_silent_joins_and_messages_carry_on_locally(
    tmp_path: Path, sqlite_url: str, silent_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services_module, "REDIS_SOCKET_TIMEOUT", 0.2)  # keeps the test short
    settings = make_settings(tmp_path, sqlite_url, redis_url=silent_redis_url)
    services = await open_services(settings)
    ada, bob = FakeMember("ada"), FakeMember("bob")
    try:
        # Bounded only so that a hang fails the test instead of stalling the suite.
        await asyncio.wait_for(services.hub.join(ada, ROOM), 60)
        await asyncio.wait_for(services.hub.join(bob, ROOM), 60)
        await asyncio.wait_for(services.hub.say("ada", ROOM, "still here"), 60)
        bus = services.hub.bus
    finally:
        await services.close()

    assert [frame["text"] for frame in bob.kinds("message")] == ["still here"]
    assert bob.kinds("presence")[-1]["users"] == ["ada", "bob"]
    assert isinstance(bus, RedisBus) and bus.unpublished >= 1


@pytest.mark.redis
async def test_an_idle_subscription_outlives_the_socket_timeout(
    tmp_path: Path,
    sqlite_url: str,
    redis_scratch: ScratchRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services_module, "REDIS_SOCKET_TIMEOUT", 0.2)
    prefix = app_prefix(redis_scratch)
    settings = make_settings(tmp_path, sqlite_url, redis_url=redis_scratch.url, redis_prefix=prefix)
    services = await open_services(settings)
    resubscribed = asyncio.Event()
    other = RedisBus(redis_scratch.connect(), channel=f"{prefix}:chat")
    bob = FakeMember("bob")
    try:
        bus = services.hub.bus
        assert isinstance(bus, RedisBus)
        await asyncio.wait_for(bus.subscribed.wait(), timeout=5)

        async def note_resubscription() -> None:
            resubscribed.set()

        bus.on_resync(note_resubscription)
        await services.hub.join(bob, ROOM)
        # Idle for several socket timeouts: a blocking pub/sub read must not time out (on
        # redis-py < 8.1 it would, and the bus would resubscribe again and again).
        await asyncio.sleep(1.0)
        await other.publish(ROOM, encode("message", ROOM, user="zoe", text="hi", ts=1.0, id=1))
        assert await received(bob, "message")
    finally:
        await other.close()
        await services.close()
        await delete_keys(redis_scratch, prefix)
    assert not resubscribed.is_set()

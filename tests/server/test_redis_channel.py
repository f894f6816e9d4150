"""The Redis channel both the chat bus and the invalidation run on: origins, resync callbacks
before anything is read, confirmations by ping, the subscriber's backoff and what cuts it short.

"Processes" are channels with Redis clients of their own on a random channel of the shared test
Redis (``MSERVICES_TEST_REDIS_URL``); the outage test runs a ``redis-server`` of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from tornado.testing import bind_unused_port

from server import redis_channel
from server.redis_channel import HEARTBEAT, Message, RedisChannel
from tests.server.security.conftest import RedisServer, ScratchRedis, redis_server, scratch_redis

__all__ = ["redis_server"]  # a fixture used here, defined with the security fixtures

log = logging.getLogger("mservices.test")


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Process:
    """One process's channel and what it heard."""

    def __init__(self, redis: Redis, channel: str, **options: Any) -> None:
        self.channel = RedisChannel(redis, channel, label="test", log=log, **options)
        self.heard: list[Message] = []
        self.lost = 0
        self.channel.on_message(self.heard.append)
        self.channel.on_lost(self._lost)

    def _lost(self) -> None:
        self.lost += 1


@pytest.fixture
async def redis_scratch() -> AsyncIterator[ScratchRedis]:
    """A private namespace on the test Redis: its prefix makes a channel of our own."""
    async with scratch_redis() as scratch:
        yield scratch


@pytest.fixture
async def processes(redis_scratch: ScratchRedis) -> AsyncIterator[Callable[..., Process]]:
    """Build processes on one random channel (not started); all closed afterwards."""
    async with AsyncExitStack() as closing:

        def build(client_name: str | None = None, **options: Any) -> Process:
            client = redis_scratch.connect(**({"client_name": client_name} if client_name else {}))
            process = Process(client, redis_scratch.prefix + "channel", **options)
            closing.push_async_callback(process.channel.close)
            return process

        yield build


async def until(condition: Callable[[], bool], *, within: float = 5.0) -> bool:
    """Poll ``condition`` until it holds; False after ``within`` s (a hang guard)."""
    for _ in range(int(within / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def listening(*processes: Process) -> None:
    """Start the subscribers and wait (at most 5 s) until they listen."""
    for process in processes:
        process.channel.start()
    for process in processes:
        await asyncio.wait_for(process.channel.subscribed.wait(), 5)


async def test_a_publish_redis_refuses_raises_for_the_caller_to_handle() -> None:
    sock, port = bind_unused_port()
    sock.close()
    redis = Redis.from_url(f"redis://127.0.0.1:{port}", socket_connect_timeout=1)
    try:
        channel = RedisChannel(redis, "nowhere", label="test", log=log)
        with pytest.raises(RedisConnectionError):
            await channel.publish({"x": 1})
    finally:
        await redis.aclose()


@pytest.mark.redis
async def test_a_message_reaches_the_others_with_its_origin_but_never_its_sender(
    processes: Callable[..., Process],
) -> None:
    a, b = processes(), processes()
    await listening(a, b)

    await a.channel.publish({"text": "héllo"})
    await b.channel.publish({"text": "from b"})  # once a hears it, a's own echo is past

    assert await until(lambda: len(a.heard) == 1 and len(b.heard) == 1)
    assert b.heard == [{"text": "héllo", "origin": a.channel.origin}]
    assert a.heard == [{"text": "from b", "origin": b.channel.origin}]


@pytest.mark.redis
async def test_resync_callbacks_run_in_order_before_the_channel_counts_as_subscribed(
    processes: Callable[..., Process],
) -> None:
    a, b = processes(), processes()
    order: list[str] = []

    async def first() -> None:
        await b.channel.publish({"during": "resync"})  # read only once the callbacks are done
        order.append("first")

    async def second() -> None:
        assert not a.channel.subscribed.is_set()
        order.append("second")

    a.channel.on_resync(first)
    a.channel.on_resync(second)
    await listening(a)

    assert order == ["first", "second"]
    assert await until(lambda: bool(a.heard))


@pytest.mark.redis
async def test_an_answered_ping_confirms_everything_published_before_it(
    processes: Callable[..., Process],
) -> None:
    clock = FakeClock()
    a = processes(clock=clock)
    await listening(a)
    subscribed_at = a.channel.confirmed_at

    clock.now += HEARTBEAT  # the subscriber pings on its next turn
    assert await until(lambda: a.channel.confirmed_at > subscribed_at)
    assert a.channel.heard_at == clock.now


@pytest.mark.redis
async def test_a_cut_subscription_is_reported_lost_and_comes_back_with_its_resync(
    processes: Callable[..., Process], redis_scratch: ScratchRedis
) -> None:
    name = "mservices-test-" + redis_scratch.prefix.split(":")[1]
    a, b = processes(client_name=name), processes()
    resyncs: list[int] = []

    async def resynced() -> None:
        resyncs.append(len(resyncs))

    a.channel.on_resync(resynced)
    await listening(a, b)
    clients = await redis_scratch.client.client_list(_type="pubsub")
    for client in clients:
        if client.get("name") == name:
            await redis_scratch.client.client_kill_filter(_id=client["id"])

    assert await until(lambda: len(resyncs) == 2)
    assert a.lost == 1
    await asyncio.wait_for(a.channel.subscribed.wait(), 5)
    await b.channel.publish({"after": "the cut"})
    assert await until(lambda: bool(a.heard))


@pytest.mark.redis
async def test_a_publish_that_succeeds_cuts_the_subscribers_backoff_short(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_channel, "BACKOFF_FIRST", 60.0)  # far past the waits below
    monkeypatch.setattr(redis_channel, "BACKOFF_MAX", 60.0)
    redis = Redis.from_url(redis_server.url, socket_connect_timeout=1, socket_timeout=5)
    process = Process(redis, "mservices-test:backoff")
    try:
        await listening(process)
        redis_server.stop()
        assert await until(lambda: process.lost == 1)
        await redis_server.start()

        await process.channel.publish({"redis": "is back"})

        await asyncio.wait_for(process.channel.subscribed.wait(), 10)
    finally:
        await process.channel.close()
        await redis.aclose()


@pytest.mark.redis
async def test_after_close_no_task_is_left(processes: Callable[..., Process]) -> None:
    before = asyncio.all_tasks()
    a = processes()
    await listening(a)
    assert len(asyncio.all_tasks() - before) == 1
    await a.channel.close()
    assert asyncio.all_tasks() == before
    assert not a.channel.subscribed.is_set()
    await a.channel.close()

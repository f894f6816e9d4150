"""Invalidation: local listeners at once, other processes through Redis pub/sub.

The Redis tests need ``MSERVICES_TEST_REDIS_URL``; each uses its own random channel, and
"processes" are separate ``Invalidation`` instances with clients of their own. Outage tests run a
``redis-server`` of their own (``redis_server``) that they restart, stop or pause, on a fake
clock for the channel's health.
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

from server.invalidation import STALE_AFTER, Event, Invalidation
from tests.server.security.conftest import RedisServer, ScratchRedis, redis_server, scratch_redis

__all__ = ["redis_server"]  # a fixture used here, defined with the security fixtures


@pytest.fixture
async def redis_scratch() -> AsyncIterator[ScratchRedis]:
    """A private namespace on the test Redis: its prefix makes a channel of our own."""
    async with scratch_redis() as scratch:
        yield scratch


class Process:
    """One process's view: an ``Invalidation`` with its own Redis client, and what it heard."""

    def __init__(
        self, redis: Redis | None, channel: str, clock: Callable[[], float] | None = None
    ) -> None:
        if clock is None:
            self.invalidation = Invalidation(redis, channel=channel)
        else:
            self.invalidation = Invalidation(redis, channel=channel, clock=clock)
        self.events: list[Event] = []
        self.invalidation.listen(self.events.append)


@pytest.fixture
async def processes(redis_scratch: ScratchRedis) -> AsyncIterator[Callable[..., Process]]:
    """Start processes on one random channel; ``subscribed`` waits until they listen."""
    channel = redis_scratch.prefix + "invalidate"
    async with AsyncExitStack() as closing:  # closes every process even when one close fails

        def start(**client_options: Any) -> Process:
            process = Process(redis_scratch.connect(**client_options), channel)
            process.invalidation.start()
            closing.push_async_callback(process.invalidation.close)
            return process

        yield start


async def subscribed(*processes: Process) -> None:
    """Wait (at most 5 s) until every process listens on the channel."""
    for process in processes:
        await asyncio.wait_for(process.invalidation.subscribed.wait(), timeout=5)


async def heard(process: Process, event: Event, *, times: int = 1, within: float = 1.0) -> bool:
    """Poll until ``process`` has heard ``event`` ``times`` times; False after ``within`` s."""
    for _ in range(int(within / 0.01)):
        if process.events.count(event) >= times:
            return True
        await asyncio.sleep(0.01)
    return process.events.count(event) >= times


# -- without Redis -------------------------------------------------------------------------


async def test_local_listeners_hear_an_event_before_publish_returns() -> None:
    invalidation = Invalidation()
    first: list[Event] = []
    second: list[Event] = []
    invalidation.listen(first.append)
    invalidation.listen(second.append)
    await invalidation.publish(Event("token", "abc"))
    assert first == second == [Event("token", "abc")]


async def test_a_failing_listener_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    invalidation = Invalidation()
    heard_events: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    invalidation.listen(broken)
    invalidation.listen(heard_events.append)
    with caplog.at_level(logging.ERROR, logger="mservices.invalidation"):
        await invalidation.publish(Event("user", "7"))
    assert heard_events == [Event("user", "7")]
    assert "an invalidation listener failed" in caplog.text


async def test_without_redis_start_starts_nothing_and_close_is_harmless() -> None:
    before = asyncio.all_tasks()
    invalidation = Invalidation()
    invalidation.start()
    assert asyncio.all_tasks() == before
    await invalidation.close()


async def test_publish_still_applies_locally_when_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there any more
    redis = Redis.from_url(f"redis://127.0.0.1:{port}", socket_connect_timeout=1)
    try:
        process = Process(redis, "mservices-test:nowhere")
        with caplog.at_level(logging.WARNING, logger="mservices.invalidation"):
            await process.invalidation.publish(Event("menus"))
        assert process.events == [Event("menus")]
        assert "could not publish invalidation" in caplog.text
    finally:
        await redis.aclose()


async def test_a_subscriber_that_cannot_connect_keeps_retrying_until_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock, port = bind_unused_port()
    sock.close()
    redis = Redis.from_url(f"redis://127.0.0.1:{port}", socket_connect_timeout=1)
    before = asyncio.all_tasks()
    try:
        process = Process(redis, "mservices-test:nowhere")
        with caplog.at_level(logging.WARNING, logger="mservices.invalidation"):
            process.invalidation.start()
            for _ in range(500):  # at most about 5 s
                if caplog.text.count("invalidation channel lost") >= 2:
                    break
                await asyncio.sleep(0.01)
        assert caplog.text.count("invalidation channel lost") >= 2
        assert not process.invalidation.subscribed.is_set()
        assert process.events == []
        await process.invalidation.close()
        assert asyncio.all_tasks() == before
    finally:
        await redis.aclose()


# -- with Redis ----------------------------------------------------------------------------


@pytest.mark.redis
async def test_subscribing_clears_every_cache_with_an_all_event(
    processes: Callable[..., Process],
) -> None:
    process = processes()
    await subscribed(process)
    assert process.events == [Event("all")]


@pytest.mark.redis
async def test_an_event_published_in_one_process_reaches_another_within_a_second(
    processes: Callable[..., Process],
) -> None:
    a, b = processes(), processes()
    await subscribed(a, b)
    await a.invalidation.publish(Event("token", "f00d"))
    assert await heard(b, Event("token", "f00d"), within=1.0)
    assert b.events == [Event("all"), Event("token", "f00d")]


@pytest.mark.redis
async def test_the_publisher_hears_its_own_event_only_once(
    processes: Callable[..., Process],
) -> None:
    a, b = processes(), processes()
    await subscribed(a, b)
    await a.invalidation.publish(Event("user", "42"))
    # Redis delivers one channel's messages in order: once A hears B's later event, its own
    # echo has come and gone.
    await b.invalidation.publish(Event("menus"))
    assert await heard(a, Event("menus"))
    assert a.events == [Event("all"), Event("user", "42"), Event("menus")]


@pytest.mark.redis
@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[1, 2]",
        b"42",
        b'{"origin": "elsewhere"}',
        b'{"origin": "elsewhere", "kind": "everything"}',
        b'{"origin": "elsewhere", "kind": ["token"]}',
        b"[" * 100_000,  # json.loads raises RecursionError, not ValueError
    ],
    ids=[
        "not-json",
        "not-utf8",
        "null",
        "a-list",
        "a-number",
        "no-kind",
        "unknown-kind",
        "unhashable-kind",
        "deeply-nested-json",
    ],
)
async def test_a_malformed_message_is_ignored_and_later_events_still_arrive(
    processes: Callable[..., Process], redis_scratch: ScratchRedis, garbage: bytes
) -> None:
    a, b = processes(), processes()
    await subscribed(a, b)
    await redis_scratch.client.publish(redis_scratch.prefix + "invalidate", garbage)
    await a.invalidation.publish(Event("token", "after"))
    assert await heard(b, Event("token", "after"))
    assert b.events == [Event("all"), Event("token", "after")]


@pytest.mark.redis
async def test_a_failing_listener_does_not_stop_remote_events_reaching_the_others(
    processes: Callable[..., Process],
) -> None:
    a, b = processes(), processes()
    after_the_broken_one: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    b.invalidation.listen(broken)
    b.invalidation.listen(after_the_broken_one.append)
    await subscribed(a, b)
    await a.invalidation.publish(Event("token", "x"))
    await a.invalidation.publish(Event("token", "y"))
    assert await heard(b, Event("token", "y"))
    assert after_the_broken_one[-2:] == [Event("token", "x"), Event("token", "y")]


@pytest.mark.redis
async def test_after_close_the_subscriber_task_is_gone(redis_scratch: ScratchRedis) -> None:
    before = asyncio.all_tasks()
    process = Process(redis_scratch.connect(), redis_scratch.prefix + "invalidate")
    process.invalidation.start()
    await subscribed(process)
    assert len(asyncio.all_tasks() - before) == 1
    await process.invalidation.close()
    assert asyncio.all_tasks() == before
    await process.invalidation.close()  # a second close is harmless


@pytest.mark.redis
async def test_a_subscriber_whose_connection_is_killed_resubscribes_and_clears_again(
    processes: Callable[..., Process], redis_scratch: ScratchRedis
) -> None:
    # Only our own subscriber is killed (found by its client name): CLIENT KILL TYPE pubsub
    # would also cut the subscribers of other suites sharing this server.
    name = "mservices-test-" + redis_scratch.prefix.split(":")[1]
    a, b = processes(), processes(client_name=name)
    await subscribed(a, b)
    clients = await redis_scratch.client.client_list(_type="pubsub")
    ours = [client["id"] for client in clients if client.get("name") == name]
    assert len(ours) == 1
    await redis_scratch.client.client_kill_filter(_id=ours[0])

    assert await heard(b, Event("all"), times=2, within=5.0)
    await a.invalidation.publish(Event("token", "after the reconnect"))
    assert await heard(b, Event("token", "after the reconnect"))
    assert b.events == [Event("all"), Event("all"), Event("token", "after the reconnect")]


# -- Redis outages (a redis-server of the test's own) ----------------------------------------


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def outage_processes(
    redis_server: RedisServer,
) -> AsyncIterator[Callable[[FakeClock], Process]]:
    """Start processes on the test's own Redis, each with its own client and a given clock."""
    async with AsyncExitStack() as closing:

        def start(clock: FakeClock) -> Process:
            redis = Redis.from_url(redis_server.url, socket_connect_timeout=2, socket_timeout=5)
            closing.push_async_callback(redis.aclose)
            process = Process(redis, "mservices-test:invalidate", clock)
            process.invalidation.start()
            closing.push_async_callback(process.invalidation.close)
            return process

        yield start
        redis_server.resume()  # a paused server would hold the closing clients up


async def until(condition: Callable[[], bool], *, within: float = 10.0) -> bool:
    """Poll ``condition`` until true; False after ``within`` s (a hang guard, not a timing)."""
    for _ in range(int(within / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def test_without_redis_the_channel_is_always_healthy() -> None:
    assert Invalidation().healthy()


@pytest.mark.redis
async def test_an_invalidation_published_right_after_redis_restarts_reaches_the_other_process(
    outage_processes: Callable[[FakeClock], Process], redis_server: RedisServer
) -> None:
    clock = FakeClock()
    a, b = outage_processes(clock), outage_processes(clock)
    await subscribed(a, b)
    await a.invalidation.publish(Event("token", "before"))  # a pooled connection, soon dead
    assert await heard(b, Event("token", "before"))

    await redis_server.restart()
    # Both subscribers are back (each cleared its caches again); A's pooled connection is not.
    assert await heard(a, Event("all"), times=2, within=10.0)
    assert await heard(b, Event("all"), times=2, within=10.0)
    await a.invalidation.publish(Event("token", "revoked"))
    assert await heard(b, Event("token", "revoked"))
    assert a.invalidation.healthy()


@pytest.mark.redis
async def test_a_publish_whose_pooled_connection_turns_out_dead_is_tried_again(
    outage_processes: Callable[[FakeClock], Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a pooled connection does after Redis restarted behind a proxy or a NAT, where its
    # close is not seen: the first command on it fails. (On loopback the pool sees the close
    # and reconnects by itself, which is why the test above passes even without a retry.)
    clock = FakeClock()
    a, b = outage_processes(clock), outage_processes(clock)
    await subscribed(a, b)
    redis = a.invalidation._redis
    assert redis is not None
    publish = redis.publish
    failures = [RedisConnectionError("Connection closed by server.")]

    async def first_on_a_dead_connection(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await publish(*args, **kwargs)

    monkeypatch.setattr(redis, "publish", first_on_a_dead_connection)
    await a.invalidation.publish(Event("token", "revoked"))
    assert not failures
    assert await heard(b, Event("token", "revoked"))
    assert a.invalidation.healthy()


@pytest.mark.redis
async def test_a_quiet_channel_stays_healthy_because_the_subscriber_pings(
    outage_processes: Callable[[FakeClock], Process],
) -> None:
    clock = FakeClock()
    process = outage_processes(clock)
    await subscribed(process)
    for _ in range(int(STALE_AFTER) + 2):  # well past STALE_AFTER in all
        clock.now += 1
        assert await until(lambda: process.invalidation.heard_at == clock.now)
        assert process.invalidation.healthy()
    assert process.events == [Event("all")]  # no gap, so nothing cleared again


@pytest.mark.redis
async def test_the_channel_is_unhealthy_while_redis_is_stopped_and_clears_caches_when_back(
    outage_processes: Callable[[FakeClock], Process], redis_server: RedisServer
) -> None:
    clock = FakeClock()
    process = outage_processes(clock)
    await subscribed(process)
    assert process.invalidation.healthy()
    redis_server.stop()
    assert await until(lambda: not process.invalidation.healthy())
    await redis_server.start()
    assert await until(process.invalidation.healthy)
    assert process.events == [Event("all"), Event("all")]


@pytest.mark.redis
async def test_the_channel_is_unhealthy_while_redis_is_paused_and_clears_caches_when_back(
    outage_processes: Callable[[FakeClock], Process], redis_server: RedisServer
) -> None:
    clock = FakeClock()  # frozen: the subscriber sends no ping until the test moves it
    process = outage_processes(clock)
    await subscribed(process)
    redis_server.pause()
    clock.now += STALE_AFTER / 2
    assert process.invalidation.healthy()  # heard from recently enough
    clock.now += STALE_AFTER
    assert not process.invalidation.healthy()  # nothing heard for longer than STALE_AFTER
    assert process.invalidation.subscribed.is_set()  # which the subscription alone never shows
    redis_server.resume()
    assert await until(process.invalidation.healthy)
    assert process.events == [Event("all"), Event("all")]


@pytest.mark.redis
async def test_a_failed_publish_makes_the_channel_unhealthy_until_redis_is_heard_again(
    outage_processes: Callable[[FakeClock], Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    process = outage_processes(clock)
    await subscribed(process)
    redis = process.invalidation._redis
    assert redis is not None

    async def refused(*args: Any, **kwargs: Any) -> int:
        raise RedisConnectionError("refused")

    monkeypatch.setattr(redis, "publish", refused)
    await process.invalidation.publish(Event("token", "lost"))
    assert not process.invalidation.healthy()
    monkeypatch.undo()
    clock.now += 1  # the subscriber's next ping is answered
    assert await until(process.invalidation.healthy)
    assert process.events == [Event("all"), Event("token", "lost"), Event("all")]


@pytest.mark.redis
async def test_a_publish_to_a_paused_redis_gives_up_and_is_logged(
    outage_processes: Callable[[FakeClock], Process],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    process = outage_processes(FakeClock())
    await subscribed(process)
    redis_server.pause()
    with caplog.at_level(logging.WARNING, logger="mservices.invalidation"):
        await asyncio.wait_for(process.invalidation.publish(Event("user", "7")), timeout=30)
    assert process.events == [Event("all"), Event("user", "7")]  # applied here all the same
    assert "could not publish invalidation" in caplog.text
    assert not process.invalidation.healthy()

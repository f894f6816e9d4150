"""Presence of several processes in Redis: "processes" are ``RedisPresence`` instances with
clients of their own under a random key prefix of the test Redis (``MSERVICES_TEST_REDIS_URL``);
one test has a process's Redis refuse, through a client of a closed port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from redis.asyncio import Redis

from server.realtime.redis_presence import RedisPresence
from tests.server.realtime.test_redis_bus import (
    ROOM,
    Process,
    channel,
    client_name,
    closed_port_client,
    closing,
    dead_redis,
    kill_subscriber,
    processes,
    started,
    until,
)
from tests.server.security.conftest import ScratchRedis

__all__ = ["channel", "closed_port_client", "closing", "dead_redis", "processes"]  # fixtures


@pytest.fixture
def presences(redis_scratch: ScratchRedis, closing: AsyncExitStack) -> Callable[..., RedisPresence]:
    """Builds a process's presence under the test prefix (closed afterwards, not started)."""

    def build(**options: Any) -> RedisPresence:
        presence = RedisPresence(
            redis_scratch.connect(), prefix=redis_scratch.prefix + "app", **options
        )
        closing.push_async_callback(presence.close)
        return presence

    return build


@pytest.mark.redis
async def test_a_user_on_two_processes_is_announced_on_the_first_join_and_the_last_leave(
    presences: Callable[..., RedisPresence],
) -> None:
    a, b = presences(), presences()
    assert await a.join(ROOM, "ada") is True
    assert await b.join(ROOM, "ada") is False
    assert await a.leave(ROOM, "ada") is False
    assert await b.leave(ROOM, "ada") is True


@pytest.mark.redis
async def test_tabs_in_one_process_count_once(presences: Callable[..., RedisPresence]) -> None:
    a, b = presences(), presences()
    assert [await a.join(ROOM, "ada") for _ in range(3)] == [True, False, False]
    assert await b.online(ROOM) == ["ada"]
    assert [await a.leave(ROOM, "ada") for _ in range(3)] == [False, False, True]
    assert await a.leave(ROOM, "ada") is False, "one leave too many is ignored"
    assert await b.online(ROOM) == []


@pytest.mark.redis
async def test_concurrent_joins_and_leaves_on_several_processes_are_announced_once(
    presences: Callable[..., RedisPresence],
) -> None:
    processes = [presences() for _ in range(4)]
    answers = await asyncio.gather(*(p.join(ROOM, "ada") for p in processes for _ in range(3)))
    assert answers.count(True) == 1
    answers = await asyncio.gather(*(p.leave(ROOM, "ada") for p in processes for _ in range(3)))
    assert answers.count(True) == 1


@pytest.mark.redis
async def test_online_merges_every_process_sorted_and_per_room(
    presences: Callable[..., RedisPresence],
) -> None:
    a, b = presences(), presences()
    await a.join(ROOM, "zoe")
    await b.join(ROOM, "ada")
    await b.join(ROOM, "zoe")
    await b.join("other", "bob")
    assert await a.online(ROOM) == await b.online(ROOM) == ["ada", "zoe"]
    assert await a.online("other") == ["bob"]
    assert await a.online("empty") == []


@pytest.mark.redis
async def test_a_process_whose_heartbeat_stopped_drops_out_after_the_ttl(
    presences: Callable[..., RedisPresence],
) -> None:
    crashed, alive = presences(ttl=1.0), presences(ttl=1.0)
    await alive.start()
    await crashed.join(ROOM, "ghost")  # never started: no heartbeat, as if the process died
    await alive.join(ROOM, "ada")
    assert await alive.online(ROOM) == ["ada", "ghost"]
    await asyncio.sleep(0.3)
    assert await alive.online(ROOM) == ["ada", "ghost"], "within the ttl"
    await asyncio.sleep(1.0)  # past the ghost's ttl; ada's heartbeat ran three times
    assert await alive.online(ROOM) == ["ada"], "the heartbeat kept ada"
    assert await alive.join(ROOM, "ghost") is True, "a dead process's users are not counted"


@pytest.mark.redis
async def test_resync_after_a_wipe_registers_the_local_users_again(
    presences: Callable[..., RedisPresence], redis_scratch: ScratchRedis
) -> None:
    a, b = presences(), presences()
    await a.join(ROOM, "ada")
    await a.join(ROOM, "ada")
    await a.join("other", "bob")
    await redis_scratch.client.delete(a.key(ROOM), a.key("other"))
    assert await b.online(ROOM) == []
    await a.resync()
    assert await b.online(ROOM) == ["ada"]
    assert await b.online("other") == ["bob"]
    assert await b.join(ROOM, "ada") is False
    assert [await a.leave(ROOM, "ada") for _ in range(2)] == [False, False], "b still has ada"


@pytest.mark.redis
async def test_close_stops_the_heartbeat_and_removes_this_processes_entries(
    presences: Callable[..., RedisPresence],
) -> None:
    before = asyncio.all_tasks()
    a, b = presences(), presences()
    await a.start()
    assert len(asyncio.all_tasks() - before) == 1
    await a.join(ROOM, "ada")
    await a.join(ROOM, "bob")
    await b.join(ROOM, "bob")
    await a.close()
    assert asyncio.all_tasks() == before
    assert await b.online(ROOM) == ["bob"]
    assert await a.leave(ROOM, "ada") is False, "nothing to announce after close"
    await a.close()


async def test_presence_without_redis_answers_from_the_local_counts(
    closed_port_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    presence = RedisPresence(closed_port_client, prefix="mservices-test-nowhere")
    with caplog.at_level(logging.WARNING, logger="mservices.chat"):
        assert [await presence.join(ROOM, "ada") for _ in range(2)] == [True, False]
        await presence.join(ROOM, "bob")
        assert await presence.online(ROOM) == ["ada", "bob"]
        assert [await presence.leave(ROOM, "ada") for _ in range(2)] == [False, True]
        assert await presence.online(ROOM) == ["bob"]
        await presence.close()
    assert "not in Redis yet" in caplog.text
    assert "stays in Redis until it expires" in caplog.text


@pytest.mark.redis
async def test_a_departure_that_missed_redis_is_taken_out_by_the_next_resync(
    presences: Callable[..., RedisPresence], closed_port_client: Redis
) -> None:
    a, b = presences(), presences()
    await a.join(ROOM, "ada")
    reachable = a._unregister
    a._unregister = closed_port_client.register_script("return 0")  # Redis away for the leave
    assert await a.leave(ROOM, "ada") is True
    assert await b.online(ROOM) == ["ada"], "the stale entry is still there"
    a._unregister = reachable
    await a.resync()
    assert await b.online(ROOM) == []


@pytest.mark.redis
async def test_a_resubscribing_bus_resyncs_presence(
    processes: Callable[..., Process],
    presences: Callable[..., RedisPresence],
    redis_scratch: ScratchRedis,
) -> None:
    name = client_name(redis_scratch)
    a = processes(client_name=name)
    presence, observer = presences(), presences()
    a.bus.on_resync(presence.resync)
    await started(a)
    await presence.join(ROOM, "ada")
    await redis_scratch.client.delete(presence.key(ROOM))  # as if Redis lost it in the outage
    assert await observer.online(ROOM) == []
    await kill_subscriber(redis_scratch, name)
    assert await until(lambda: a.resyncs == 2, within=5.0)
    assert await observer.online(ROOM) == ["ada"]

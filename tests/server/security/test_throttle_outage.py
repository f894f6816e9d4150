"""Throttles during a Redis outage: counted in this process's memory, logged once, bounded waits,
and back in Redis when it answers again.

Each test runs a ``redis-server`` of its own (``redis_server``) that it stops or pauses; time
is a fake clock the test moves. A paused Redis must never hang a test: every call is guarded by
``answer`` (a generous limit that only turns a hang into a failure, not a timing assertion).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from server.security.throttle import (
    FallbackLoginThrottle,
    FallbackSignupThrottle,
    MemoryLoginThrottle,
    MemorySignupThrottle,
    RedisLoginThrottle,
    RedisOutage,
    RedisSignupThrottle,
    SignupPolicy,
    ThrottlePolicy,
)
from tests.server.security.conftest import RedisServer

pytestmark = pytest.mark.redis

T = TypeVar("T")

POLICY = ThrottlePolicy(free_failures=2, ip_free_failures=100, base_seconds=30, max_seconds=60)
SIGNUPS = SignupPolicy(per_ip=2, window_seconds=100)
IP = "203.0.113.9"
UNREACHABLE = "Redis is unreachable"
ANSWERS_AGAIN = "Redis answers again"


@dataclass
class FakeClock:
    """Seconds that pass only when the test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLoginThrottle(RedisLoginThrottle):
    """A Redis throttle that counts how often it was asked (to see when Redis is skipped)."""

    def __init__(self, redis: Redis, policy: ThrottlePolicy, *, prefix: str) -> None:
        super().__init__(redis, policy, prefix=prefix)
        self.asked = 0

    async def retry_after(self, name: str, ip: str) -> float:
        self.asked += 1
        return await super().retry_after(name, ip)

    async def record_failure(self, name: str, ip: str) -> float:
        self.asked += 1
        return await super().record_failure(name, ip)


@dataclass
class Setup:
    """A fallback login and signup throttle sharing one outage, on the test's own Redis."""

    server: RedisServer
    redis: Redis
    clock: FakeClock
    outage: RedisOutage
    in_redis: CountingLoginThrottle
    logins: FallbackLoginThrottle
    signups: FallbackSignupThrottle


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[Setup]:
    """Throttles as ``open_services`` builds them, with the client options it uses."""
    redis = Redis.from_url(redis_server.url, socket_connect_timeout=2, socket_timeout=5)
    clock = FakeClock()
    outage = RedisOutage(clock=clock)
    in_redis = CountingLoginThrottle(redis, POLICY, prefix="t:login:")
    logins = FallbackLoginThrottle(in_redis, MemoryLoginThrottle(POLICY), outage)
    signups = FallbackSignupThrottle(
        RedisSignupThrottle(redis, SIGNUPS, prefix="t:signup:"),
        MemorySignupThrottle(SIGNUPS),
        outage,
    )
    try:
        yield Setup(redis_server, redis, clock, outage, in_redis, logins, signups)
    finally:
        redis_server.stop()
        await redis.aclose()


async def answer(call: Awaitable[T]) -> T:
    """``call``'s result; a hang (30 s) fails the test instead of stalling the suite."""
    return await asyncio.wait_for(call, timeout=30)


async def fail_logins(throttle: FallbackLoginThrottle, times: int) -> list[float]:
    """Record ``times`` failures for ("cxk", IP); the lockout each caused."""
    return [await answer(throttle.record_failure("cxk", IP)) for _ in range(times)]


@pytest.mark.parametrize("how", ["stopped", "paused"])
async def test_login_failures_are_counted_in_memory_while_redis_is_unreachable(
    setup: Setup, how: str
) -> None:
    setup.server.stop() if how == "stopped" else setup.server.pause()
    assert await fail_logins(setup.logins, 3) == [0, 0, 30]
    assert await answer(setup.logins.retry_after("cxk", IP)) == pytest.approx(30, abs=1)
    await answer(setup.logins.record_success("cxk", IP))
    assert await answer(setup.logins.retry_after("cxk", IP)) == 0
    assert setup.outage.down


@pytest.mark.parametrize("how", ["stopped", "paused"])
async def test_registrations_are_counted_in_memory_while_redis_is_unreachable(
    setup: Setup, how: str
) -> None:
    setup.server.stop() if how == "stopped" else setup.server.pause()
    waits = [await answer(setup.signups.admit(IP)) for _ in range(3)]
    assert waits[:2] == [0, 0]
    assert waits[2] > 0


async def test_after_one_failure_redis_is_not_asked_again_until_the_cool_down_ends(
    setup: Setup,
) -> None:
    setup.server.pause()  # each Redis call would wait: it must be one call per cool-down
    await fail_logins(setup.logins, 3)
    await answer(setup.logins.retry_after("cxk", IP))
    assert setup.in_redis.asked == 1
    setup.clock.now += setup.outage.cooldown + 1
    await fail_logins(setup.logins, 2)
    assert setup.in_redis.asked == 2


async def test_an_outage_is_logged_once_however_many_calls_and_retries_it_lasts(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.server.stop()
    with caplog.at_level(logging.INFO, logger="mservices.throttle"):
        for _ in range(3):
            await fail_logins(setup.logins, 2)
            await answer(setup.signups.admit(IP))
            setup.clock.now += setup.outage.cooldown + 1  # Redis is asked again, still away
    assert caplog.text.count(UNREACHABLE) == 1
    assert ANSWERS_AGAIN not in caplog.text


@pytest.mark.parametrize("how", ["restarted", "resumed"])
async def test_counting_returns_to_redis_when_it_answers_again(
    setup: Setup, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    if how == "restarted":
        setup.server.stop()
    else:
        setup.server.pause()
    with caplog.at_level(logging.INFO, logger="mservices.throttle"):
        await fail_logins(setup.logins, 1)
        if how == "restarted":
            await setup.server.start()
        else:
            setup.server.resume()
        setup.clock.now += setup.outage.cooldown + 1
        await fail_logins(setup.logins, 3)
        await answer(setup.signups.admit(IP))
    assert not setup.outage.down
    assert caplog.text.count(UNREACHABLE) == 1
    assert caplog.text.count(ANSWERS_AGAIN) == 1
    # The counts are in Redis, where every process sees them: another process's throttle
    # (its own client, no memory of this one) finds the lockout.
    other = Redis.from_url(setup.server.url, socket_timeout=5)
    try:
        elsewhere = RedisLoginThrottle(other, POLICY, prefix="t:login:")
        assert await elsewhere.retry_after("cxk", IP) > 0
        assert await other.zcard("t:signup:" + IP) == 1
    finally:
        await other.aclose()


async def test_while_redis_answers_the_memory_counters_are_not_used(setup: Setup) -> None:
    await fail_logins(setup.logins, 3)
    assert await setup.logins.memory.retry_after("cxk", IP) == 0
    assert await setup.logins.retry_after("cxk", IP) > 0
    assert not setup.outage.down

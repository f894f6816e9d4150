"""Registration throttling, in memory and in Redis: ``per_ip`` registrations in any sliding window.

Time is a fake clock the test moves, never a sleep. The Redis half needs
``MSERVICES_TEST_REDIS_URL``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from server.security.throttle import (
    MemorySignupThrottle,
    RedisSignupThrottle,
    SignupPolicy,
    SignupThrottle,
)
from tests.server.security.conftest import ScratchRedis, scratch_redis

A = "192.0.2.1"
B = "198.51.100.7"
POLICY = SignupPolicy(per_ip=3, window_seconds=100)


@dataclass
class FakeClock:
    """Seconds that pass only when the test says so."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    async def read(self) -> float:
        """The same time, for the Redis throttle's awaitable clock."""
        return self.now


SignupFactory = Callable[[SignupPolicy, FakeClock], SignupThrottle]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_signups(request: pytest.FixtureRequest) -> AsyncIterator[SignupFactory]:
    """Builds a registration throttle on a fake clock: in memory, then in Redis."""
    if request.param == "memory":
        yield lambda policy, clock: MemorySignupThrottle(policy, clock=clock)
        return
    async with scratch_redis() as scratch:
        yield lambda policy, clock: RedisSignupThrottle(
            scratch.client, policy, prefix=scratch.prefix, clock=clock.read
        )


async def admit(throttle: SignupThrottle, ip: str, times: int) -> list[float]:
    """Ask ``times`` times; the wait each answer named (0: admitted)."""
    return [await throttle.admit(ip) for _ in range(times)]


# -- both implementations ------------------------------------------------------------------


async def test_an_ip_registers_its_allowance_then_is_told_when_to_come_back(
    make_signups: SignupFactory,
) -> None:
    clock = FakeClock()
    throttle = make_signups(POLICY, clock)
    assert await admit(throttle, A, 3) == [0, 0, 0]
    clock.now += 40
    # The first registration leaves the window 100 s after it was made: 60 s from now.
    assert await throttle.admit(A) == pytest.approx(60)


async def test_the_window_slides_one_registration_at_a_time(make_signups: SignupFactory) -> None:
    clock = FakeClock()
    throttle = make_signups(POLICY, clock)
    await admit(throttle, A, 1)
    clock.now += 50
    await admit(throttle, A, 2)
    clock.now += 50  # the first is now exactly 100 s old: out of the window
    assert await admit(throttle, A, 2) == [0, pytest.approx(50)]


async def test_refused_attempts_are_not_counted(make_signups: SignupFactory) -> None:
    clock = FakeClock()
    throttle = make_signups(POLICY, clock)
    await admit(throttle, A, 3)
    for _ in range(20):
        clock.now += 1
        assert await throttle.admit(A) > 0
    clock.now += 80  # 100 s after the three admitted ones, however often it was refused since
    assert await admit(throttle, A, 4) == [0, 0, 0, pytest.approx(100)]


async def test_addresses_are_counted_apart(make_signups: SignupFactory) -> None:
    clock = FakeClock()
    throttle = make_signups(POLICY, clock)
    await admit(throttle, A, 3)
    assert await admit(throttle, B, 3) == [0, 0, 0]
    assert await throttle.admit(A) > 0
    assert await throttle.admit(B) > 0


async def test_an_allowance_of_one_admits_one_per_window(make_signups: SignupFactory) -> None:
    clock = FakeClock()
    throttle = make_signups(SignupPolicy(per_ip=1, window_seconds=3600), clock)
    assert await admit(throttle, A, 2) == [0, pytest.approx(3600)]
    clock.now += 3600
    assert await admit(throttle, A, 1) == [0]


# -- memory only ---------------------------------------------------------------------------


async def test_the_memory_throttle_holds_at_most_max_keys_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MemorySignupThrottle, "MAX_KEYS", 10)
    clock = FakeClock()
    throttle = MemorySignupThrottle(SignupPolicy(per_ip=1, window_seconds=100), clock=clock)
    for n in range(100):
        await throttle.admit(f"10.0.0.{n}")
        assert len(throttle._times) <= 10
    assert await admit(throttle, B, 2) == [0, 100]


async def test_the_memory_throttle_forgets_expired_addresses_first_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MemorySignupThrottle, "MAX_KEYS", 3)
    clock = FakeClock()
    throttle = MemorySignupThrottle(SignupPolicy(per_ip=1, window_seconds=100), clock=clock)
    await throttle.admit("old-1")
    await throttle.admit("old-2")
    clock.now += 60
    await throttle.admit(A)
    clock.now += 60  # old-1 and old-2 are out of the window, A is not
    await throttle.admit(B)
    assert set(throttle._times) == {A, B}
    assert await throttle.admit(A) == pytest.approx(40)


async def test_the_memory_throttle_reads_the_monotonic_clock_by_default() -> None:
    throttle = MemorySignupThrottle(SignupPolicy(per_ip=1, window_seconds=3600))
    assert await admit(throttle, A, 1) == [0]
    assert 3599 < await throttle.admit(A) <= 3600


# -- Redis only ----------------------------------------------------------------------------


@pytest.mark.redis
async def test_two_redis_throttles_on_one_prefix_share_their_counts(
    redis_scratch: ScratchRedis,
) -> None:
    clock = FakeClock()
    first = RedisSignupThrottle(
        redis_scratch.connect(), POLICY, prefix=redis_scratch.prefix, clock=clock.read
    )
    second = RedisSignupThrottle(
        redis_scratch.connect(), POLICY, prefix=redis_scratch.prefix, clock=clock.read
    )
    await admit(first, A, 2)
    assert await admit(second, A, 2) == [0, pytest.approx(100)]
    assert await first.admit(A) == pytest.approx(100)


@pytest.mark.redis
async def test_a_redis_count_expires_with_its_window(redis_scratch: ScratchRedis) -> None:
    redis = redis_scratch.client
    throttle = RedisSignupThrottle(
        redis, SignupPolicy(per_ip=2, window_seconds=30), prefix=redis_scratch.prefix
    )
    assert await admit(throttle, A, 3) == [0, 0, pytest.approx(30, abs=1)]
    keys = [key async for key in redis.scan_iter(match=redis_scratch.prefix + "*")]
    assert keys == [(redis_scratch.prefix + A).encode()]
    assert 0 < await redis.pttl(keys[0]) <= 30_000
    assert await redis.zcard(keys[0]) == 2

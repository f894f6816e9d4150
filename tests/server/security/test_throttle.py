"""Login throttling, in memory and in Redis: free failures, doubling lockouts, and who is locked.

The throttle tests run against both implementations (``make_throttle``); the Redis half needs
``MSERVICES_TEST_REDIS_URL``.
"""

from __future__ import annotations

import asyncio

import pytest

from server.security.throttle import (
    LoginThrottle,
    MemoryLoginThrottle,
    RedisLoginThrottle,
    ThrottlePolicy,
    retry_after_header,
)
from tests.server.security.conftest import ScratchRedis, ThrottleFactory

A = "192.0.2.1"
B = "198.51.100.7"

# Lockouts long enough never to pass during a test, unless a test says otherwise.
SLOW = ThrottlePolicy(free_failures=3, ip_free_failures=100, base_seconds=100, max_seconds=10_000)


async def fail(throttle: LoginThrottle, name: str, ip: str, times: int) -> list[float]:
    """Record ``times`` failures; the lockout each one caused."""
    return [await throttle.record_failure(name, ip) for _ in range(times)]


# -- the policy ----------------------------------------------------------------------------


def test_the_policy_locks_nothing_within_the_allowance_then_doubles_up_to_the_cap() -> None:
    policy = ThrottlePolicy(base_seconds=2, max_seconds=20)
    assert [policy.lockout(n, free=3) for n in range(1, 9)] == [0, 0, 0, 2, 4, 8, 16, 20]


def test_the_policy_stays_at_the_cap_after_a_huge_number_of_failures() -> None:
    assert ThrottlePolicy(max_seconds=900).lockout(10**6, free=5) == 900


@pytest.mark.parametrize(
    ("seconds", "header"), [(0, "1"), (0.01, "1"), (1, "1"), (1.01, "2"), (899.2, "900")]
)
def test_the_retry_after_header_is_whole_seconds_rounded_up_and_at_least_one(
    seconds: float, header: str
) -> None:
    assert retry_after_header(seconds) == header


# -- both implementations ------------------------------------------------------------------


async def test_failures_within_the_allowance_lock_nothing(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(SLOW)
    assert await fail(throttle, "alice", A, 3) == [0, 0, 0]
    assert await throttle.retry_after("alice", A) == 0


async def test_the_lockout_doubles_with_each_failure_past_the_allowance(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(SLOW)
    assert await fail(throttle, "alice", A, 6) == [0, 0, 0, 100, 200, 400]
    assert 300 < await throttle.retry_after("alice", A) <= 400


async def test_the_lockout_is_capped_at_max_seconds(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(ThrottlePolicy(free_failures=1, base_seconds=100, max_seconds=250))
    assert await fail(throttle, "alice", A, 5) == [0, 100, 200, 250, 250]
    assert 200 < await throttle.retry_after("alice", A) <= 250


async def test_a_success_forgets_the_failures_of_that_name_and_ip(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(SLOW)
    await fail(throttle, "alice", A, 3)
    await throttle.record_success("alice", A)
    assert await fail(throttle, "alice", A, 3) == [0, 0, 0]
    assert await throttle.retry_after("alice", A) == 0


async def test_a_success_keeps_the_failures_counted_against_the_ip(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(
        ThrottlePolicy(free_failures=100, ip_free_failures=3, base_seconds=100, max_seconds=1000)
    )
    await fail(throttle, "alice", A, 3)
    await throttle.record_success("alice", A)
    assert await throttle.record_failure("alice", A) == 100
    assert await throttle.retry_after("someone else", A) > 0


async def test_someone_elses_failures_never_lock_the_owner_out_from_another_ip(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(SLOW)
    await fail(throttle, "alice", A, 10)
    assert await throttle.retry_after("alice", A) > 0
    assert await throttle.retry_after("alice", B) == 0
    assert await throttle.retry_after("ALICE", B) == 0


async def test_an_ip_that_sprays_many_names_is_locked_out_for_every_name(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(
        ThrottlePolicy(free_failures=5, ip_free_failures=10, base_seconds=100, max_seconds=1000)
    )
    lockouts = [await throttle.record_failure(f"user{n}", A) for n in range(11)]
    assert lockouts == [0] * 10 + [100]
    assert await throttle.retry_after("a name never tried", A) > 0
    assert await throttle.retry_after("a name never tried", B) == 0
    assert await throttle.retry_after("user0", B) == 0


async def test_names_compare_case_insensitively(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(SLOW)
    assert await fail(throttle, "Alice", A, 1) + await fail(throttle, "ALICE", A, 1) == [0, 0]
    assert await fail(throttle, "alice", A, 2) == [0, 100]
    assert await throttle.retry_after("aLiCe", A) > 0
    await throttle.record_success("ALICE", A)
    assert await throttle.retry_after("alice", A) == 0


async def test_ips_are_counted_apart(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(SLOW)
    await fail(throttle, "alice", A, 3)
    assert await fail(throttle, "alice", B, 3) == [0, 0, 0]


async def test_a_lockout_expires_after_its_time(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(ThrottlePolicy(free_failures=1, base_seconds=0.2, max_seconds=1))
    assert await fail(throttle, "alice", A, 2) == [0, 0.2]
    assert await throttle.retry_after("alice", A) > 0
    for _ in range(100):  # at most about 5 s
        if await throttle.retry_after("alice", A) == 0:
            break
        await asyncio.sleep(0.05)
    assert await throttle.retry_after("alice", A) == 0


async def test_failures_after_an_expired_lockout_keep_doubling_within_the_window(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(ThrottlePolicy(free_failures=1, base_seconds=0.1, max_seconds=10))
    assert await fail(throttle, "alice", A, 2) == [0, 0.1]
    for _ in range(100):
        if await throttle.retry_after("alice", A) == 0:
            break
        await asyncio.sleep(0.05)
    assert await throttle.record_failure("alice", A) == pytest.approx(0.2)


# -- memory only ---------------------------------------------------------------------------


async def test_the_memory_throttle_holds_at_most_max_keys_counters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MemoryLoginThrottle, "MAX_KEYS", 10)
    throttle = MemoryLoginThrottle(ThrottlePolicy(free_failures=1, base_seconds=100))
    for n in range(100):
        await throttle.record_failure(f"user{n}", f"10.0.0.{n}")
        assert len(throttle._counters) <= 10
    assert await fail(throttle, "latest", B, 2) == [0, 100]
    assert await throttle.retry_after("latest", B) > 0


async def test_the_memory_throttle_forgets_counters_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MemoryLoginThrottle, "MAX_KEYS", 4)
    throttle = MemoryLoginThrottle(ThrottlePolicy(free_failures=1, window_seconds=0.05))
    await throttle.record_failure("old", A)
    await asyncio.sleep(0.1)
    assert await fail(throttle, "old", A, 1) == [0]  # the earlier failure was forgotten


# -- Redis only ----------------------------------------------------------------------------


@pytest.mark.redis
async def test_two_redis_throttles_on_one_prefix_share_their_counters(
    redis_scratch: ScratchRedis,
) -> None:
    first = RedisLoginThrottle(redis_scratch.connect(), SLOW, prefix=redis_scratch.prefix)
    second = RedisLoginThrottle(redis_scratch.connect(), SLOW, prefix=redis_scratch.prefix)
    await fail(first, "alice", A, 2)
    assert await fail(second, "alice", A, 2) == [0, 100]
    assert await first.retry_after("alice", A) > 0
    await second.record_success("alice", A)
    assert await first.retry_after("alice", A) == 0


@pytest.mark.redis
async def test_redis_counters_expire_with_the_window_or_the_lockout(
    redis_scratch: ScratchRedis,
) -> None:
    redis = redis_scratch.client
    policy = ThrottlePolicy(free_failures=1, base_seconds=100, window_seconds=30)
    throttle = RedisLoginThrottle(redis, policy, prefix=redis_scratch.prefix)
    await throttle.record_failure("bob", A)
    keys = sorted([key async for key in redis.scan_iter(match=redis_scratch.prefix + "*")])
    assert [key.removeprefix(redis_scratch.prefix.encode())[:5] for key in keys] == [
        b"ip:19",
        b"pair:",
    ]
    ip_key, pair_key = keys
    assert 0 < await redis.pttl(ip_key) <= 30_000
    assert 0 < await redis.pttl(pair_key) <= 30_000
    await throttle.record_failure("bob", A)  # locked for 100 s: outlives the 30 s window
    assert 30_000 < await redis.pttl(pair_key) <= 100_000

"""Login and registration throttling.

Login: failures counted per (name, client IP) and per IP, with exponential backoff. Counting per
(name, IP) rather than per name means an attacker's failures never lock the real owner out from
another address; the per-IP counter (with a higher allowance) stops one address from spraying many
names. The counters live in memory (one process) or in Redis (shared by every process); both
implement ``LoginThrottle``.

Registration: at most ``per_ip`` registrations per client IP in any sliding window
(``SignupThrottle``), counted before the password is hashed, so one address cannot create hundreds
of accounts, each of which costs an argon2 hash. In memory or in Redis, like the login counters.

Redis outages: a Redis throttle is wrapped in a fallback (``FallbackLoginThrottle``,
``FallbackSignupThrottle``) that counts in this process's memory while Redis is unreachable, so
a login or registration never fails because Redis does. One ``RedisOutage`` per process decides:
each Redis call waits at most ``wait`` seconds; after a failure Redis is left alone for
``cooldown`` seconds (so a paused Redis costs one short wait per cool-down, not a socket timeout
per login), and then asked again. The outage is logged once when it starts and once when Redis
answers again. Counts made in memory during an outage are not carried over to Redis: a
throttle is a brake, and an outage loosens it to one allowance per process for its duration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("mservices.throttle")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How many failures are free, and how the lockout grows after them."""

    free_failures: int = 5
    ip_free_failures: int = 50
    base_seconds: float = 1.0
    max_seconds: float = 900.0
    window_seconds: float = 3600.0

    def lockout(self, failures: int, free: int) -> float:
        """Seconds locked after ``failures`` (0 while within ``free``); doubles with each one."""
        if failures <= free:
            return 0.0
        return float(min(self.base_seconds * 2 ** min(failures - free - 1, 40), self.max_seconds))


class LoginThrottle(Protocol):
    """Where failure counters live."""

    async def retry_after(self, name: str, ip: str) -> float:
        """Seconds until this (name, IP) may try again; 0 when it may now."""

    async def record_failure(self, name: str, ip: str) -> float:
        """Count a failure; returns the lockout it causes (0 when still free)."""

    async def record_success(self, name: str, ip: str) -> None:
        """Forget the (name, IP) failures (the per-IP count stays)."""


def retry_after_header(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def _pair_key(name: str, ip: str) -> str:
    return f"pair:{name.casefold()}\x00{ip}"


def _ip_key(ip: str) -> str:
    return f"ip:{ip}"


@dataclass(slots=True)
class _Counter:
    failures: int
    locked_until: float
    forget_at: float


class MemoryLoginThrottle:
    """Counters in this process's memory (the single-process default), bounded in size."""

    MAX_KEYS = 100_000

    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy
        self._counters: dict[str, _Counter] = {}

    async def retry_after(self, name: str, ip: str) -> float:
        """See LoginThrottle."""
        now = time.monotonic()
        return max(self._remaining(_pair_key(name, ip), now), self._remaining(_ip_key(ip), now))

    async def record_failure(self, name: str, ip: str) -> float:
        """See LoginThrottle."""
        now = time.monotonic()
        pair = self._bump(_pair_key(name, ip), now, self.policy.free_failures)
        per_ip = self._bump(_ip_key(ip), now, self.policy.ip_free_failures)
        return max(pair, per_ip)

    async def record_success(self, name: str, ip: str) -> None:
        """See LoginThrottle."""
        self._counters.pop(_pair_key(name, ip), None)

    def _remaining(self, key: str, now: float) -> float:
        counter = self._counters.get(key)
        if counter is None or counter.forget_at <= now:
            return 0.0
        return max(0.0, counter.locked_until - now)

    def _bump(self, key: str, now: float, free: int) -> float:
        counter = self._counters.get(key)
        if counter is None or counter.forget_at <= now:
            if len(self._counters) >= self.MAX_KEYS:
                self._forget_expired(now)
            counter = self._counters[key] = _Counter(0, 0.0, 0.0)
        counter.failures += 1
        lockout = self.policy.lockout(counter.failures, free)
        if lockout:
            counter.locked_until = now + lockout
        counter.forget_at = now + max(self.policy.window_seconds, lockout)
        return lockout

    def _forget_expired(self, now: float) -> None:
        for key in [key for key, counter in self._counters.items() if counter.forget_at <= now]:
            del self._counters[key]
        if len(self._counters) < self.MAX_KEYS:
            return
        # Still full: forget the oldest counters that lock nothing, so a lockout is never lifted
        # by unrelated traffic; only when every counter is locked does the oldest go.
        unlocked = [key for key, counter in self._counters.items() if counter.locked_until <= now]
        for key in unlocked[: len(self._counters) - self.MAX_KEYS + 1]:
            del self._counters[key]
        while len(self._counters) >= self.MAX_KEYS:
            self._counters.pop(next(iter(self._counters)))


# Atomic in Redis: count, lock when past the allowance, and keep the key for the window.
_FAIL_SCRIPT = """
local failures = redis.call('HINCRBY', KEYS[1], 'n', 1)
local free = tonumber(ARGV[2])
local lockout = 0
if failures > free then
  lockout = math.min(tonumber(ARGV[3]) * 2 ^ math.min(failures - free - 1, 40), tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'until', tonumber(ARGV[1]) + lockout)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(1000 * math.max(tonumber(ARGV[5]), lockout)))
return tostring(lockout)
"""


class RedisLoginThrottle:
    """Counters in Redis, shared by every process; times are Redis server time."""

    def __init__(self, redis: Redis, policy: ThrottlePolicy, *, prefix: str = "mservices:login:"):
        self.policy = policy
        self._redis = redis
        self._prefix = prefix
        self._fail = redis.register_script(_FAIL_SCRIPT)

    async def retry_after(self, name: str, ip: str) -> float:
        """See LoginThrottle."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hget(self._prefix + _pair_key(name, ip), "until")
            pipe.hget(self._prefix + _ip_key(ip), "until")
            (seconds, microseconds), pair_until, ip_until = await pipe.execute()
        now = float(seconds) + float(microseconds) / 1e6
        until = max(float(pair_until or 0), float(ip_until or 0))
        return max(0.0, until - now)

    async def record_failure(self, name: str, ip: str) -> float:
        """See LoginThrottle."""
        now = await self._now()
        lockouts = []
        for key, free in (
            (_pair_key(name, ip), self.policy.free_failures),
            (_ip_key(ip), self.policy.ip_free_failures),
        ):
            result = await self._fail(
                keys=[self._prefix + key],
                args=[
                    now,
                    free,
                    self.policy.base_seconds,
                    self.policy.max_seconds,
                    self.policy.window_seconds,
                ],
            )
            lockouts.append(float(result))
        return max(lockouts)

    async def record_success(self, name: str, ip: str) -> None:
        """See LoginThrottle."""
        await self._redis.delete(self._prefix + _pair_key(name, ip))

    async def _now(self) -> float:
        seconds, microseconds = await self._redis.time()
        return float(seconds) + float(microseconds) / 1e6


# -- registrations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignupPolicy:
    """How many registrations one client IP may make in any window of ``window_seconds``."""

    per_ip: int = 10
    window_seconds: float = 3600.0


class SignupThrottle(Protocol):
    """Where registration times live."""

    async def admit(self, ip: str) -> float:
        """Count one registration from ``ip`` and return 0; or, when ``ip`` has used its
        allowance for the window, count nothing and return the seconds until it may again."""


class MemorySignupThrottle:
    """Registration times in this process's memory (the single-process default), bounded in
    size: at most ``per_ip`` times per address and ``MAX_KEYS`` addresses."""

    MAX_KEYS = 100_000

    def __init__(self, policy: SignupPolicy, *, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self._clock = clock
        self._times: dict[str, deque[float]] = {}

    async def admit(self, ip: str) -> float:
        """See SignupThrottle."""
        now = self._clock()
        times = self._times.get(ip)
        if times is not None:
            _forget_before(times, now - self.policy.window_seconds)
            if len(times) >= self.policy.per_ip:
                return times[0] + self.policy.window_seconds - now
        else:
            if len(self._times) >= self.MAX_KEYS:
                self._forget_expired(now)
            times = self._times[ip] = deque()
        times.append(now)
        return 0.0

    def _forget_expired(self, now: float) -> None:
        horizon = now - self.policy.window_seconds
        for ip in [ip for ip, times in self._times.items() if times[-1] <= horizon]:
            del self._times[ip]
        while len(self._times) >= self.MAX_KEYS:  # still full: the oldest address goes
            self._times.pop(next(iter(self._times)))


def _forget_before(times: deque[float], horizon: float) -> None:
    while times and times[0] <= horizon:
        times.popleft()


# Atomic in Redis: forget times out of the window, refuse when the allowance is used (answering
# when the oldest leaves it), otherwise record this one and keep the key for the window.
_SIGNUP_SCRIPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(1000 * window))
return '0'
"""


class RedisSignupThrottle:
    """Registration times in Redis, shared by every process; times are Redis server time unless
    a ``clock`` is given (tests)."""

    def __init__(
        self,
        redis: Redis,
        policy: SignupPolicy,
        *,
        prefix: str = "mservices:signup:",
        clock: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self.policy = policy
        self._redis = redis
        self._prefix = prefix
        self._clock = clock or self._server_time
        self._admit = redis.register_script(_SIGNUP_SCRIPT)

    async def admit(self, ip: str) -> float:
        """See SignupThrottle."""
        now = await self._clock()
        result = await self._admit(
            keys=[self._prefix + ip],
            args=[now, self.policy.window_seconds, self.policy.per_ip, secrets.token_hex(8)],
        )
        return max(0.0, float(result))

    async def _server_time(self) -> float:
        seconds, microseconds = await self._redis.time()
        return float(seconds) + float(microseconds) / 1e6


# -- Redis outages ---------------------------------------------------------------------------

REDIS_WAIT = 1.0
"""Seconds a throttle waits for Redis before it counts in this process instead."""

REDIS_COOLDOWN = 10.0
"""Seconds the throttles leave Redis alone after it failed, before asking it again."""


class RedisOutage:
    """Whether this process's throttles ask Redis or count in memory, shared by all of them so
    an outage is noticed (and logged) once, and costs one bounded wait per cool-down."""

    def __init__(
        self,
        *,
        wait: float = REDIS_WAIT,
        cooldown: float = REDIS_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait = wait
        self.cooldown = cooldown
        self._clock = clock
        self.down = False
        """True from a failed Redis call until one succeeds again."""
        self._retry_at = 0.0

    async def call(
        self, in_redis: Callable[[], Awaitable[T]], in_memory: Callable[[], Awaitable[T]]
    ) -> T:
        """``in_redis()`` when Redis answers within ``wait``; otherwise ``in_memory()``."""
        if self.down and self._clock() < self._retry_at:
            return await in_memory()
        try:
            async with asyncio.timeout(self.wait):
                result = await in_redis()
        except (RedisError, OSError, TimeoutError) as error:
            if not self.down:
                self.down = True
                log.warning(
                    "Redis is unreachable (%s): the login, registration and reset throttles "
                    "count in this process until it answers again",
                    str(error) or type(error).__name__,
                )
            self._retry_at = self._clock() + self.cooldown
            return await in_memory()
        if self.down:
            self.down = False
            log.info("Redis answers again: the throttles count in Redis again")
        return result


class FallbackLoginThrottle:
    """Login counters in Redis, or in this process's memory while Redis is unreachable."""

    def __init__(
        self, redis: RedisLoginThrottle, memory: MemoryLoginThrottle, outage: RedisOutage
    ) -> None:
        self.redis = redis
        self.memory = memory
        self.outage = outage

    async def retry_after(self, name: str, ip: str) -> float:
        """See LoginThrottle."""
        return await self.outage.call(
            lambda: self.redis.retry_after(name, ip), lambda: self.memory.retry_after(name, ip)
        )

    async def record_failure(self, name: str, ip: str) -> float:
        """See LoginThrottle."""
        return await self.outage.call(
            lambda: self.redis.record_failure(name, ip),
            lambda: self.memory.record_failure(name, ip),
        )

    async def record_success(self, name: str, ip: str) -> None:
        """See LoginThrottle."""
        await self.outage.call(
            lambda: self.redis.record_success(name, ip),
            lambda: self.memory.record_success(name, ip),
        )


class FallbackSignupThrottle:
    """Registration times in Redis, or in this process's memory while Redis is unreachable."""

    def __init__(
        self, redis: RedisSignupThrottle, memory: MemorySignupThrottle, outage: RedisOutage
    ) -> None:
        self.redis = redis
        self.memory = memory
        self.outage = outage

    async def admit(self, ip: str) -> float:
        """See SignupThrottle."""
        return await self.outage.call(lambda: self.redis.admit(ip), lambda: self.memory.admit(ip))


def login_throttle(
    redis: Redis | None, policy: ThrottlePolicy, *, prefix: str, outage: RedisOutage
) -> LoginThrottle:
    """The login throttle of a process: in Redis (counting in memory while it is unreachable)
    when ``redis`` is given, else in memory."""
    if redis is None:
        return MemoryLoginThrottle(policy)
    return FallbackLoginThrottle(
        RedisLoginThrottle(redis, policy, prefix=prefix), MemoryLoginThrottle(policy), outage
    )


def window_throttle(
    redis: Redis | None, policy: SignupPolicy, *, prefix: str, outage: RedisOutage
) -> SignupThrottle:
    """A sliding-window throttle (registrations, reset requests) of a process: in Redis
    (counting in memory while it is unreachable) when ``redis`` is given, else in memory."""
    if redis is None:
        return MemorySignupThrottle(policy)
    return FallbackSignupThrottle(
        RedisSignupThrottle(redis, policy, prefix=prefix), MemorySignupThrottle(policy), outage
    )

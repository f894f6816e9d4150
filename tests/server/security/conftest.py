"""Fixtures for security tests: a scratch Redis namespace, and a throttle of each kind.

Redis is shared with other suites, so nothing here flushes a database: every test gets a random
key prefix (which is also the channel name prefix) and deletes the keys under it afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.security.throttle import (
    LoginThrottle,
    MemoryLoginThrottle,
    RedisLoginThrottle,
    ThrottlePolicy,
)
from tests.conftest import REQUIRE_SERVICES, service_url


@dataclass(slots=True)
class ScratchRedis:
    """A Redis server seen through a private namespace: ``prefix`` for keys and channels."""

    url: str
    prefix: str
    client: Redis
    _clients: list[Redis] = field(default_factory=list)

    def connect(self, **options: Any) -> Redis:
        """Another client of the same server, as a second process would open; closed at the end."""
        client = Redis.from_url(self.url, **options)
        self._clients.append(client)
        return client


@asynccontextmanager
async def scratch_redis() -> AsyncIterator[ScratchRedis]:
    """A fresh namespace on the test Redis (skip without one); its keys are deleted afterwards."""
    url = service_url("MSERVICES_TEST_REDIS_URL", "Redis")
    client = Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        await client.aclose()
        message = f"Redis at {url} does not answer: {error}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    scratch = ScratchRedis(url=url, prefix=f"mservices-test:{secrets.token_hex(8)}:", client=client)
    try:
        yield scratch
    finally:
        try:
            keys = [key async for key in client.scan_iter(match=scratch.prefix + "*")]
            if keys:
                await client.delete(*keys)
        finally:
            for other in scratch._clients:
                await other.aclose()
            await client.aclose()


@pytest.fixture
async def redis_scratch() -> AsyncIterator[ScratchRedis]:
    """A private namespace on the test Redis."""
    async with scratch_redis() as scratch:
        yield scratch


ThrottleFactory = Callable[[ThrottlePolicy], LoginThrottle]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_throttle(request: pytest.FixtureRequest) -> AsyncIterator[ThrottleFactory]:
    """Builds a throttle for a policy: in memory, then in Redis (one namespace per test)."""
    if request.param == "memory":
        yield MemoryLoginThrottle
        return
    async with scratch_redis() as scratch:

        def make(policy: ThrottlePolicy) -> LoginThrottle:
            return RedisLoginThrottle(scratch.client, policy, prefix=scratch.prefix)

        yield make

"""Fixtures for security tests: a scratch Redis namespace, and a throttle of each kind.

Redis is shared with other suites, so nothing here flushes a database: every test gets a random
key prefix (which is also the channel name prefix) and deletes the keys under it afterwards.
Outage tests never touch that shared server: ``redis_server`` starts a ``redis-server`` of the
test's own on a free port, which the test stops, pauses (SIGSTOP) and resumes (SIGCONT).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tornado.testing import bind_unused_port

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


class RedisServer:
    """A ``redis-server`` of one test's own, on a free loopback port: nothing else uses it, so
    the test may stop, restart, pause and resume it."""

    def __init__(self, executable: str) -> None:
        self._executable = executable
        sock, self.port = bind_unused_port()
        sock.close()
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> None:
        """Launch the process (returns at once: Popen does not wait for it)."""
        self._process = subprocess.Popen(
            [
                *(self._executable, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        """Start it and wait (at most 10 s) until it answers PING."""
        self._spawn()
        client = Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            for _ in range(500):
                try:
                    if await client.ping():
                        return
                except (RedisError, OSError):
                    await asyncio.sleep(0.02)
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Kill it (connections are refused from now on)."""
        if self._process is None:
            return
        if self._paused:
            self.resume()
        self._process.kill()
        self._process.wait(timeout=10)
        self._process = None

    async def restart(self) -> None:
        """Stop it and start a new, empty one on the same port."""
        self.stop()
        await self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: it answers again, connections intact (nothing when not paused)."""
        if self._process is None or not self._paused:
            return
        self._process.send_signal(signal.SIGCONT)
        self._paused = False


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A running redis-server of this test's own (skip, or fail when services are required,
    without the ``redis-server`` executable); killed afterwards."""
    executable = shutil.which("redis-server")
    if executable is None:
        message = "outage tests need the redis-server executable"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(executable)
    await server.start()
    try:
        yield server
    finally:
        server.stop()

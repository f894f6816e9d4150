"""Fixtures and helpers shared by the realtime tests: a scratch Redis namespace, logging in
through the ``/login`` form as a browser does (the chat socket takes the session cookie), and a
gate that holds a handshake in ``prepare()``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest

from server.handlers.base import SESSION_COOKIE
from tests.conftest import Client, Response
from tests.server.security.conftest import ScratchRedis, scratch_redis


@pytest.fixture
async def redis_scratch() -> AsyncIterator[ScratchRedis]:
    """A private namespace on the test Redis: channel and keys under its prefix."""
    async with scratch_redis() as scratch:
        yield scratch


def app_prefix(redis_scratch: ScratchRedis) -> str:
    """A ``MSERVICES_REDIS_PREFIX`` unique to the test (colons are not allowed there); its keys
    are not under the scratch prefix, so ``delete_keys`` removes them."""
    return redis_scratch.prefix.replace(":", "-") + "app"


async def delete_keys(redis_scratch: ScratchRedis, prefix: str) -> None:
    """Delete every key under ``prefix`` on the test Redis."""
    keys = [key async for key in redis_scratch.client.scan_iter(match=prefix + "*")]
    if keys:
        await redis_scratch.client.delete(*keys)


def cookie_value(response: Response, name: str) -> str:
    """The value ``response`` sets for cookie ``name``."""
    for header in response.headers.get_list("Set-Cookie"):
        pair = header.split(";", 1)[0]
        key, _, value = pair.partition("=")
        if key.strip() == name and value:
            return value
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('Set-Cookie')}")


async def form_login(client: Client, name: str, password: str) -> str:
    """Log in through the XSRF-protected ``/login`` form; returns the session ``Cookie`` header."""
    form = await client.get("/login")
    xsrf = cookie_value(form, "_xsrf")
    response = await client.post(
        "/login",
        body=urlencode({"name": name, "pwd": password, "next": "/", "_xsrf": xsrf}),
        headers={
            "Cookie": f"_xsrf={xsrf}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status == 302, response.text
    return f"{SESSION_COOKIE}={cookie_value(response, SESSION_COOKIE)}"


async def form_logout(client: Client, cookie: str) -> None:
    """Log the session of ``cookie`` (from ``form_login``) out through ``POST /logout``."""
    xsrf = cookie_value(await client.get("/login"), "_xsrf")
    response = await client.post(
        "/logout",
        body=urlencode({"_xsrf": xsrf}),
        headers={
            "Cookie": f"{cookie}; _xsrf={xsrf}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status == 302, response.text


@dataclass
class Gate:
    """Holds whoever awaits ``passage()`` until ``release`` is set; ``entered`` says someone is
    waiting (e.g. a WebSocket handshake paused in ``prepare()``)."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def passage(self) -> None:
        """Say someone arrived, then wait until released."""
        self.entered.set()
        await self.release.wait()


@dataclass
class Calls:
    """What a socket handler's ``open`` and ``on_close`` did, in order."""

    order: list[str] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)


async def drop_during_handshake(base_url: str, path: str, gate: Gate, cookie: str = "") -> None:
    """Send the WebSocket upgrade request of ``path`` and close the connection once the
    handler is held at ``gate`` (in ``prepare()``)."""
    host, port = base_url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Origin: {base_url}",
        *([f"Cookie: {cookie}"] if cookie else []),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await asyncio.wait_for(gate.entered.wait(), 5.0)
    writer.close()
    await writer.wait_closed()

"""Fixtures and helpers shared by the realtime tests: a scratch Redis namespace, and logging in
through the ``/login`` form as a browser does (the chat socket takes the session cookie)."""

from __future__ import annotations

from collections.abc import AsyncIterator
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

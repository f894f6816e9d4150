"""``deploy/nginx.conf`` with Debian's nginx in front of ``mservices serve --processes 2`` (MariaDB
and Redis shared): the /user API, static files, chat between clients on different processes, and
the real client address, all through nginx; forwarding headers sent straight to a process by a
client that is not a trusted proxy are ignored. When one process is killed, the other keeps its
WebSockets and every request fails over to it.

The client is made to come from 127.0.0.2: loopback, but not a trusted proxy (only 127.0.0.1 and
::1 are), so the address the app reports tells nginx's forwarding apart from the peer address.
nginx runs as a plain subprocess on a config rendered from the shipped file, never as the
system service; without nginx the module is skipped (failed under
MSERVICES_TEST_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

from bench.nginx import find_nginx, render_conf, running_nginx
from bench.servers import free_port
from repositories.db import create_engine, make_session_factory
from repositories.models import AuditEntry
from repositories.roles import RoleRepository
from server.permissions import CHAT_USE, DOWNLOADS_USE
from server.realtime.websocket import CHAT_SUBPROTOCOL
from server.runtime import INSTANCE_HEADER
from tests.conftest import REQUIRE_SERVICES, service_url
from tests.server.test_cli import (
    PROCESSES_TIMEOUT,
    Supervised,
    multi_process_env,
    serving_processes,
)
from tests.server.test_runtime import wipe_database

CLIENT_IP = "127.0.0.2"
SPOOFED = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"}
PASSWORD = "correct horse battery"
SIGNUP_ROLE = "nginx-testers"
WAIT = 10.0
ATTEMPTS = 20
"""WebSocket connections tried before two land on different processes (nginx alternates)."""


@dataclass(frozen=True, slots=True)
class Stack:
    """nginx in front of two app processes."""

    nginx_url: str
    app_urls: tuple[str, str]
    mysql_url: str
    supervised: Supervised


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mysql_url: str) -> Iterator[Stack]:
    """nginx (rendered deploy/nginx.conf) in front of ``serve --processes 2``."""
    if find_nginx() is None:
        reason = "the nginx test needs Debian's nginx (.ci/run installs it)"
        if REQUIRE_SERVICES:
            pytest.fail(f"MSERVICES_TEST_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    redis_url = service_url("MSERVICES_TEST_REDIS_URL", "Redis")
    work = tmp_path_factory.mktemp("nginx")
    env = multi_process_env(
        mysql_url,
        redis_url,
        MSERVICES_XHEADERS="true",
        MSERVICES_DOWNLOAD_ALLOW="127.0.0.1",
        MSERVICES_SIGNUP_ROLE=SIGNUP_ROLE,
    )
    try:
        with serving_processes(work, env) as supervised:
            asyncio.run(add_signup_role(mysql_url))
            first, second = supervised.ports
            listen = free_port()
            conf = render_conf(listen=f"127.0.0.1:{listen}", ports=supervised.ports, state_dir=work)
            with running_nginx(conf, work, listen):
                yield Stack(
                    f"http://127.0.0.1:{listen}",
                    (f"http://127.0.0.1:{first}", f"http://127.0.0.1:{second}"),
                    mysql_url,
                    supervised,
                )
    finally:
        asyncio.run(wipe_database(mysql_url))


async def fetch(
    url: str,
    method: str = "GET",
    *,
    body: Any = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> HTTPResponse:
    """One request from CLIENT_IP (never raises on an error status)."""
    all_headers = dict(headers or {})
    data: str | None = None
    if body is not None:
        data = json.dumps(body)
        all_headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urlencode(form)
        all_headers["Content-Type"] = "application/x-www-form-urlencoded"
    http = AsyncHTTPClient(force_instance=True)
    try:
        return await http.fetch(
            HTTPRequest(
                url,
                method=method,
                body=data,
                headers=all_headers,
                network_interface=CLIENT_IP,
                follow_redirects=False,
                request_timeout=WAIT,
            ),
            raise_error=False,
        )
    finally:
        http.close()


def cookies(response: HTTPResponse) -> dict[str, str]:
    """The cookies ``response`` sets."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


async def add_signup_role(url: str) -> None:
    """The role every account registered here gets: it chats and downloads."""
    engine = create_engine(url)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            roles = RoleRepository(session)
            role = await roles.add(name=SIGNUP_ROLE)
            await roles.set_permissions(role.id, {CHAT_USE, DOWNLOADS_USE})
    finally:
        await engine.dispose()


async def register(base_url: str) -> str:
    """A fresh account registered through ``base_url``; returns its name."""
    name = f"n{secrets.token_hex(5)}"
    response = await fetch(f"{base_url}/user", "POST", body={"name": name, "pwd": PASSWORD})
    assert response.code == 201, response.body
    return name


async def bearer(base_url: str, name: str) -> dict[str, str]:
    """Log ``name`` in through ``POST /user/login``; the Authorization header to send."""
    login = await fetch(f"{base_url}/user/login", "POST", body={"name": name, "pwd": PASSWORD})
    assert login.code == 200, login.body
    return {"Authorization": f"Bearer {json.loads(login.body)['token']}"}


async def browser_session(base_url: str, name: str) -> str:
    """Log ``name`` in with the XSRF-protected form ``POST /login``; the Cookie header to send."""
    form_page = await fetch(f"{base_url}/login")
    xsrf = cookies(form_page)["_xsrf"]
    response = await fetch(
        f"{base_url}/login",
        "POST",
        form={"_xsrf": xsrf, "name": name, "pwd": PASSWORD, "next": "/"},
        headers={"Cookie": f"_xsrf={xsrf}"},
    )
    assert response.code == 302, response.body
    return f"mservices_session={cookies(response)['mservices_session']}"


async def open_chat(base_url: str, cookie: str, room: str) -> WebSocketClientConnection:
    """The chat WebSocket of ``room`` through ``base_url``, history read."""
    request = HTTPRequest(
        "ws" + base_url.removeprefix("http") + f"/message?room={room}",
        headers={"Cookie": cookie, "Origin": base_url},
        network_interface=CLIENT_IP,
        request_timeout=WAIT,
    )
    return await asyncio.wait_for(websocket_connect(request, subprotocols=[CHAT_SUBPROTOCOL]), WAIT)


def instance_of(connection: WebSocketClientConnection) -> str:
    """The process that accepted ``connection`` (its ``X-Mservices-Instance``)."""
    assert connection.headers is not None
    instance: str = connection.headers[INSTANCE_HEADER]
    return instance


async def next_frame(
    connection: WebSocketClientConnection, kind: str, text: str | None = None
) -> dict[str, Any]:
    """The next frame of type ``kind`` (and ``text``, when given); others are skipped."""
    while True:
        raw = await asyncio.wait_for(connection.read_message(), WAIT)
        assert raw is not None, f"closed before a {kind!r} frame"
        frame: dict[str, Any] = json.loads(raw)
        if frame["type"] == kind and text in (None, frame.get("text")):
            return frame


async def close(connection: WebSocketClientConnection) -> None:
    """Close a WebSocket and wait (bounded) until the server has closed it too."""
    connection.close()
    with contextlib.suppress(TimeoutError):
        while await asyncio.wait_for(connection.read_message(), WAIT) is not None:
            pass


async def test_the_user_api_works_through_nginx(stack: Stack) -> None:
    name = await register(stack.nginx_url)
    me = await fetch(f"{stack.nginx_url}/user/me", headers=await bearer(stack.nginx_url, name))
    assert me.code == 200, me.body
    assert json.loads(me.body)["user"]["name"] == name
    assert me.headers[INSTANCE_HEADER] in {url.rsplit(":", 1)[1] for url in stack.app_urls}


async def test_static_files_are_served_by_nginx_itself(stack: Stack, project_dir: Path) -> None:
    response = await fetch(f"{stack.nginx_url}/s/css/site.css")
    assert response.code == 200
    assert response.body == (project_dir / "static" / "css" / "site.css").read_bytes()
    assert INSTANCE_HEADER not in response.headers  # no app process answered


async def test_downloads_under_s_go_to_the_app(stack: Stack) -> None:
    response = await fetch(f"{stack.nginx_url}/s/downloads/no-such-file.bin")
    assert response.code == 404
    assert INSTANCE_HEADER in response.headers


async def test_a_callers_download_calls_all_reach_the_process_that_runs_them(
    stack: Stack,
) -> None:
    auth = await bearer(stack.nginx_url, await register(stack.nginx_url))
    source = f"{stack.app_urls[0]}/s/css/site.css"
    started = await fetch(
        f"{stack.nginx_url}/api/downloads", "POST", body={"url": source}, headers=auth
    )
    assert started.code == 202, started.body
    # Plain round robin would send every other call to the process that never heard of it.
    answers = [
        await fetch(stack.nginx_url + started.headers["Location"], headers=auth) for _ in range(6)
    ]
    assert [answer.code for answer in answers] == [200] * 6
    assert {answer.headers[INSTANCE_HEADER] for answer in answers} == {
        started.headers[INSTANCE_HEADER]
    }


async def test_chat_reaches_a_client_on_the_other_process(stack: Stack) -> None:
    room = f"r{secrets.token_hex(4)}"
    cookie = await browser_session(stack.nginx_url, await register(stack.nginx_url))
    sockets: dict[str, WebSocketClientConnection] = {}
    extra: list[WebSocketClientConnection] = []
    try:
        for _ in range(ATTEMPTS):
            connection = await open_chat(stack.nginx_url, cookie, room)
            instance = instance_of(connection)
            if instance in sockets:
                extra.append(connection)
            else:
                sockets[instance] = connection
            if len(sockets) == 2:
                break
        assert len(sockets) == 2, f"every connection landed on {list(sockets)}"
        first, second = sockets.values()
        await next_frame(first, "history")
        await next_frame(second, "history")
        first.write_message(json.dumps({"type": "message", "text": "hello from one"}))
        heard = await next_frame(second, "message", "hello from one")
        assert heard["room"] == room
        second.write_message(json.dumps({"type": "message", "text": "and back"}))
        assert (await next_frame(first, "message", "and back"))["room"] == room
    finally:
        for connection in [*sockets.values(), *extra]:
            await close(connection)


async def test_the_app_sees_the_real_client_address_through_nginx(stack: Stack) -> None:
    request = HTTPRequest(
        "ws" + stack.nginx_url.removeprefix("http") + "/ticker",
        headers={"Origin": stack.nginx_url, **SPOOFED},
        network_interface=CLIENT_IP,
        request_timeout=WAIT,
    )
    ticker = await asyncio.wait_for(websocket_connect(request), WAIT)
    try:
        greeting = await asyncio.wait_for(ticker.read_message(), WAIT)
    finally:
        await close(ticker)
    assert isinstance(greeting, str)
    assert greeting.endswith(CLIENT_IP)


async def test_logins_through_nginx_are_audited_and_throttled_under_the_real_address(
    stack: Stack,
) -> None:
    name = await register(stack.nginx_url)
    wrong = await fetch(
        f"{stack.nginx_url}/user/login", "POST", body={"name": name, "pwd": "wrong password!"}
    )
    assert wrong.code == 401
    engine = create_engine(stack.mysql_url)
    try:
        async with engine.connect() as connection:
            addresses = set(
                await connection.scalars(
                    select(AuditEntry.client_ip).where(AuditEntry.actor == name)
                )
            )
    finally:
        await engine.dispose()
    assert addresses == {CLIENT_IP}


async def test_echo_reports_the_real_client_address_through_nginx(stack: Stack) -> None:
    response = await fetch(f"{stack.nginx_url}/echo", headers=SPOOFED)
    assert response.code == 200, response.body
    assert json.loads(response.body)["remote_ip"] == CLIENT_IP


async def test_forwarding_headers_sent_straight_to_a_process_by_a_client_are_ignored(
    stack: Stack,
) -> None:
    response = await fetch(f"{stack.app_urls[1]}/echo", headers=SPOOFED)
    assert response.code == 200, response.body
    assert json.loads(response.body)["remote_ip"] == CLIENT_IP


async def test_metrics_are_not_served_through_nginx_but_on_each_process_port(
    stack: Stack,
) -> None:
    assert (await fetch(f"{stack.nginx_url}/metrics")).code == 404
    # Straight to a process from 127.0.0.2: not in MSERVICES_METRICS_ALLOW, refused.
    assert (await fetch(f"{stack.app_urls[0]}/metrics")).code == 403


# Last in the module: it kills a process (the supervisor restarts it before the test ends).
async def test_a_killed_process_leaves_the_others_websockets_open_and_requests_fail_over(
    stack: Stack,
) -> None:
    room = f"r{secrets.token_hex(4)}"
    name = await register(stack.nginx_url)
    auth = await bearer(stack.nginx_url, name)
    cookie = await browser_session(stack.nginx_url, name)
    chat = await open_chat(stack.nginx_url, cookie, room)
    late: WebSocketClientConnection | None = None
    survivor = instance_of(chat)
    victim = next(port for port in stack.supervised.ports if str(port) != survivor)
    pid = stack.supervised.child_pids()[victim]
    supervisor = stack.supervised.process
    # Frozen, the supervisor cannot restart the killed process while the requests below run, so
    # they all meet a dead process (nothing else is frozen: SIGSTOP stops that one pid).
    supervisor.send_signal(signal.SIGSTOP)
    try:
        await next_frame(chat, "history")
        os.kill(pid, signal.SIGKILL)
        await until_refused(victim)

        answers = [await fetch(f"{stack.nginx_url}/user/me", headers=auth) for _ in range(10)]
        assert [answer.code for answer in answers] == [200] * 10
        assert {answer.headers[INSTANCE_HEADER] for answer in answers} == {survivor}

        # The open socket stays open and hears a message sent after the kill, from a socket
        # opened after it (which nginx could only give to the survivor).
        late = await open_chat(stack.nginx_url, cookie, room)
        assert instance_of(late) == survivor
        await next_frame(late, "history")
        late.write_message(json.dumps({"type": "message", "text": "after the kill"}))
        assert (await next_frame(chat, "message", "after the kill"))["room"] == room
    finally:
        supervisor.send_signal(signal.SIGCONT)
        for connection in (chat, late):
            if connection is not None:
                await close(connection)
    await until_nginx_reaches(stack, victim)
    assert f"(port {victim}, pid {pid}) exited with status -9 (SIGKILL)" in (
        stack.supervised.stderr()
    )


async def until_refused(port: int) -> None:
    """Wait (bounded) until nothing accepts connections on ``port``."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        writer.close()
        await writer.wait_closed()
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        await asyncio.sleep(0.05)


async def until_nginx_reaches(stack: Stack, port: int) -> None:
    """Wait (bounded) until nginx sends a request to the process on ``port`` again: the
    supervisor has restarted it and nginx's fail_timeout has passed."""
    deadline = time.monotonic() + PROCESSES_TIMEOUT
    while (await fetch(f"{stack.nginx_url}/healthz")).headers.get(INSTANCE_HEADER) != str(port):
        assert time.monotonic() < deadline, stack.supervised.stderr()
        await asyncio.sleep(0.1)

"""``mservices serve`` as a real process: the TCP chat beside HTTP, and the graceful stop on SIGTERM
(TCP clients get a goodbye line, a request in flight still gets its answer, exit code 0); and the
draining HTTP server in process.

Processes run in ``tmp_path`` with a minimal environment (no caller ``MSERVICES_*``) and free
loopback ports; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from tornado.httpclient import HTTPRequest
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler
from tornado.websocket import websocket_connect

from repositories.db import create_engine
from server.runtime import DrainingHTTPServer, close_websockets
from server.services import Services
from tests.conftest import Client, service_url, wipe
from tests.processes import HOST, Served, create_superuser, serve, server_env
from tests.server.test_cli import (
    SERVE_TIMEOUT,
    multi_process_env,
    serving_processes,
)

NAME = "x"
PASSWORD = "correct horse battery"
WAIT = 10.0
"""The longest a socket operation in these tests may block."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``mservices serve`` on free HTTP and TCP ports, with the superuser NAME already created."""
    env = server_env(MSERVICES_DATA_DIR=str(tmp_path / "data"))
    create_superuser(tmp_path, env, NAME, PASSWORD)
    with serve(tmp_path, env) as served:
        yield served


def connect(port: int) -> socket.socket:
    """A blocking client socket to ``port``, retried until the server listens (bounded)."""
    deadline = time.monotonic() + SERVE_TIMEOUT
    while True:
        try:
            return socket.create_connection((HOST, port), timeout=WAIT)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def refuses_connections(port: int) -> bool:
    """True once nothing accepts connections on ``port`` (waits at most SERVE_TIMEOUT)."""
    deadline = time.monotonic() + SERVE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=WAIT).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            # Accepted into the backlog just as the listener closed: the next try is refused.
            pass
        time.sleep(0.05)
    return False


def read_until(lines: BinaryIO, wanted: str) -> list[str]:
    """Lines of the TCP chat up to and including the first containing ``wanted``."""
    seen: list[str] = []
    while True:
        raw = lines.readline()
        assert raw, f"closed before {wanted!r}; saw {seen}"
        seen.append(raw.decode("utf-8").rstrip("\r\n"))
        if wanted in seen[-1]:
            return seen


def test_sigterm_sends_tcp_clients_the_goodbye_line_and_exits_0(served: Served) -> None:
    with connect(served.tcp_port) as client, client.makefile("rb") as lines:
        read_until(lines, "LOGIN <name> <password>")
        client.sendall(f"LOGIN {NAME} {PASSWORD}\n".encode())
        # No LANG and no language on the account: the TCP chat speaks Chinese.
        assert read_until(lines, "* lobby 在线：")[-1] == f"* lobby 在线：{NAME}"
        client.sendall(b"see you\n")
        read_until(lines, f"[lobby] {NAME}: see you")

        served.process.send_signal(signal.SIGTERM)
        rest = [raw.decode("utf-8").rstrip("\r\n") for raw in lines]  # to the end of the stream
    assert rest[-1] == "* 服务器正在关闭，再见"
    assert served.process.wait(timeout=15) == 0
    assert f"TCP chat on {HOST}:{served.tcp_port}" in served.stderr()


def test_sigterm_lets_a_request_in_flight_finish_and_refuses_new_connections(
    served: Served,
) -> None:
    sigterm_during_a_login(served.process, served.http_port, (served.http_port,), served.stderr)


def sigterm_during_a_login(
    process: subprocess.Popen[bytes],
    port: int,
    listening: tuple[int, ...],
    stderr: Callable[[], str],
) -> None:
    """Start a login on ``port``, SIGTERM ``process`` while its body is still arriving, check
    that every port in ``listening`` refuses new connections, then that the login succeeds and
    ``process`` exits 0."""
    body = json.dumps({"name": NAME, "pwd": PASSWORD}).encode()
    head = (
        f"POST /user/login HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    with connect(port) as client, client.makefile("rb") as response:
        client.sendall(head)
        # The interim answer proves the server has the headers: the request is in flight.
        assert response.readline().startswith(b"HTTP/1.1 100")
        assert response.readline() == b"\r\n"
        client.sendall(body[:5])

        process.send_signal(signal.SIGTERM)
        for each in listening:
            assert refuses_connections(each), stderr()
        assert process.poll() is None  # still waiting for our request

        client.sendall(body[5:])
        status_line = response.readline()
        answer = response.read()  # the server closes the connection after the response
    assert status_line.startswith(b"HTTP/1.1 200"), (status_line, answer, stderr())
    assert b'"token"' in answer
    assert process.wait(timeout=15) == 0
    assert "still running" not in stderr()


@pytest.mark.mariadb
@pytest.mark.redis
def test_sigterm_to_the_supervisor_of_2_processes_lets_a_request_in_flight_finish(
    tmp_path: Path, mysql_url: str
) -> None:
    env = multi_process_env(mysql_url, service_url("MSERVICES_TEST_REDIS_URL", "Redis"))
    try:
        create_superuser(tmp_path, env, NAME, PASSWORD)
        with serving_processes(tmp_path, env) as supervised:
            children = supervised.child_pids()
            first, second = supervised.ports
            sigterm_during_a_login(supervised.process, second, (first, second), supervised.stderr)
        assert set(children) == {first, second}
        assert supervised.stderr().count("exited with status 0") == 2
    finally:
        asyncio.run(wipe_database(mysql_url))


async def wipe_database(url: str) -> None:
    """Delete every row the test's processes wrote to the shared MariaDB test database."""
    engine = create_engine(url)
    try:
        await wipe(engine)
    finally:
        await engine.dispose()


# --- DrainingHTTPServer, in process ---------------------------------------------------------------


class Hello(RequestHandler):
    """Answers every GET and POST."""

    def get(self) -> None:
        """Say hello."""
        self.write("hello")

    def post(self) -> None:
        """Say how much was received."""
        self.write(f"got {len(self.request.body)} bytes")


@pytest.fixture
async def draining() -> AsyncIterator[tuple[DrainingHTTPServer, int]]:
    """A DrainingHTTPServer of a tiny app on a free loopback port, and the port."""
    sock, port = bind_unused_port()
    server = DrainingHTTPServer(Application([("/", Hello)]))
    server.add_sockets([sock])
    try:
        yield server, port
    finally:
        server.stop()
        await server.close_all_connections()


async def test_drain_closes_idle_keep_alive_connections_at_once(
    draining: tuple[DrainingHTTPServer, int],
) -> None:
    server, port = draining
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), WAIT)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"hello"
        server.stop()
        assert await asyncio.wait_for(server.drain(WAIT), WAIT / 2) is True
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, not kept alive
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_drain_waits_for_a_body_still_arriving_then_closes(
    draining: tuple[DrainingHTTPServer, int],
) -> None:
    server, port = draining
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), WAIT)
    try:
        writer.write(
            f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"HTTP/1.1 100")
        writer.write(b"01234")
        server.stop()
        drained = asyncio.create_task(server.drain(WAIT))
        await asyncio.sleep(0.1)
        assert not drained.done()
        assert server.requests_in_flight == 1
        writer.write(b"56789")
        answer = await asyncio.wait_for(reader.read(), WAIT)  # ends: closed after the answer
        assert b"HTTP/1.1 200" in answer
        assert answer.endswith(b"got 10 bytes")
        assert await asyncio.wait_for(drained, WAIT) is True
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_drain_cuts_a_request_still_unfinished_after_the_timeout(
    draining: tuple[DrainingHTTPServer, int],
) -> None:
    server, port = draining
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), WAIT)
    try:
        writer.write(
            f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"HTTP/1.1 100")
        await asyncio.wait_for(reader.readline(), WAIT)
        server.stop()
        assert await asyncio.wait_for(server.drain(0.2), WAIT) is False
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_websocket_opened_after_the_shutdown_closed_them_is_closed_with_1001(
    client: Client, services: Services
) -> None:
    await close_websockets(services)

    url = "ws" + client.base_url.removeprefix("http") + "/ticker"
    request = HTTPRequest(url, headers={"Origin": client.base_url}, request_timeout=5)
    connection = await asyncio.wait_for(websocket_connect(request), 5)
    try:
        assert await asyncio.wait_for(connection.read_message(), 5) is None
        assert connection.close_code == 1001
    finally:
        connection.close()

"""The supervisor of ``serve --processes N`` with real child processes.

In process (``supervise`` with stand-in children): a stop signal that arrives while the children
are still being started reaches every child already started, and no later child starts; a
child that keeps crashing is started again after growing waits, never sooner. With
``mservices serve --processes 2`` (MariaDB and Redis): a process killed with SIGKILL is started
again on its port while the other keeps serving and keeps its WebSocket and TCP clients, and
SIGTERM afterwards still stops the set with exit status 0. (Starting and stopping the set is
tested in test_cli.py, the graceful stop of a request in flight in test_runtime.py.)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

from bench.servers import free_ports
from repositories.db import create_engine
from server.realtime.websocket import CHAT_SUBPROTOCOL
from server.runtime import INSTANCE_HEADER
from server.supervisor import Backoff, Child, supervise
from tests.conftest import service_url, wipe
from tests.processes import HOST, create_superuser
from tests.server.test_cli import (
    PROCESSES_TIMEOUT,
    Supervised,
    multi_process_env,
    serving_processes,
)

CHILD = """
import pathlib, signal, sys, time
fate = pathlib.Path(sys.argv[1])
def stop(*_):
    fate.write_text("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(10)
fate.write_text("never stopped")
sys.exit(3)
"""
CRASH = "import sys; sys.exit(3)"
NAME = "x"
PASSWORD = "correct horse battery"
WAIT = 10.0
"""The longest one read, connection or request of these tests may take."""


def test_a_stop_signal_while_children_start_reaches_them_all_and_starts_no_more(
    tmp_path: Path,
) -> None:
    started: list[int] = []

    def command(host: str, child: Child) -> list[str]:
        started.append(child.index)
        if child.index == 1:  # SIGTERM arrives while the second child is being started
            os.kill(os.getpid(), signal.SIGTERM)
        return [sys.executable, "-c", CHILD, str(tmp_path / f"child-{child.index}")]

    before = signal.getsignal(signal.SIGTERM)
    status = supervise("127.0.0.1", [Child(index, 0, 0) for index in range(3)], command=command)

    assert started == [0, 1]
    fates = {path.name: path.read_text() for path in tmp_path.iterdir()}
    # A child signalled before it installed its handler dies without writing: also stopped.
    assert "never stopped" not in fates.values(), fates
    assert status == 0
    assert signal.getsignal(signal.SIGTERM) == before  # the supervisor's handler is gone


def test_the_restart_wait_doubles_up_to_the_cap_and_starts_over_after_a_long_run() -> None:
    backoff = Backoff(first=0.5, cap=4.0, stable=60.0)
    delays: list[float] = []
    previous: float | None = None
    for _ in range(6):
        previous = backoff.delay(previous, uptime=1.0)
        delays.append(previous)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(4.0, uptime=60.0) == 0.5  # it had served a while: a fresh crash


def test_a_child_that_keeps_crashing_is_restarted_after_growing_waits_until_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []

    def command(host: str, child: Child) -> list[str]:
        starts.append(time.monotonic())
        if len(starts) < 6:
            return [sys.executable, "-c", CRASH]
        os.kill(os.getpid(), signal.SIGTERM)  # the sixth start is the last: stop the set
        return [sys.executable, "-c", CHILD, str(tmp_path / "last")]

    backoff = Backoff(first=0.05, cap=0.2, stable=60.0)
    with caplog.at_level(logging.INFO, logger="mservices.supervisor"):
        status = supervise("127.0.0.1", [Child(0, 8000, 0)], command=command, backoff=backoff)

    restarts = re.findall(
        r"process 0 \(port 8000, pid \d+\) exited with status 3 after [\d.]+ s; "
        r"starting it again in ([\d.]+) s",
        caplog.text,
    )
    assert [float(wait) for wait in restarts] == [0.05, 0.1, 0.2, 0.2, 0.2]
    # Never started again before its wait was over: a crash loop does not spin.
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= float(wait) for gap, wait in zip(gaps, restarts, strict=True)), gaps
    assert len(starts) == 6
    assert status == 0  # the last child stopped on SIGTERM (or died of it before it could catch it)


# --- serve --processes 2: one process killed ------------------------------------------------------


@pytest.mark.mariadb
@pytest.mark.redis
async def test_a_killed_process_is_restarted_alone_and_the_other_keeps_its_clients(
    tmp_path: Path, mysql_url: str
) -> None:
    env = multi_process_env(mysql_url, service_url("MSERVICES_TEST_REDIS_URL", "Redis"))
    first = free_ports(4)  # HTTP on the first two, the TCP chat on the next two
    env.update(MSERVICES_PORT=str(first), MSERVICES_TCP_PORT=str(first + 2))
    try:
        create_superuser(tmp_path, env, NAME, PASSWORD)
        with serving_processes(tmp_path, env) as supervised:
            await kill_one_and_check_the_other(supervised, int(env["MSERVICES_TCP_PORT"]))
        stderr = supervised.stderr()
        assert stderr.count("exited with status 0") == 2, stderr
    finally:
        await wipe_database(mysql_url)


async def kill_one_and_check_the_other(supervised: Supervised, first_tcp: int) -> None:
    """SIGKILL the first process while a chat WebSocket and a TCP chat client are connected to
    the second; the first comes back on its port, the second's clients still talk; SIGTERM
    stops the set."""
    victim, survivor = supervised.ports
    pids = supervised.child_pids()
    url = f"http://{HOST}:{survivor}"
    cookie = await browser_session(url)
    chat = await open_chat(url, cookie)
    doomed = await open_chat(f"http://{HOST}:{victim}", cookie)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, first_tcp + 1), WAIT)
    try:
        await next_frame(chat, "history")
        await read_line(reader, "LOGIN")
        writer.write(f"LANG en_US\nLOGIN {NAME} {PASSWORD}\n".encode())
        await read_line(reader, "* online in lobby:")

        os.kill(pids[victim], signal.SIGKILL)
        while await asyncio.wait_for(doomed.read_message(), WAIT) is not None:
            pass  # its history, then the end: the socket went with its process

        await until(lambda: supervised.child_pids()[victim] != pids[victim], supervised.stderr)
        answer = await until_answered(f"http://{HOST}:{victim}/healthz", supervised.stderr)
        assert answer.headers[INSTANCE_HEADER] == str(victim)
        assert supervised.child_pids()[survivor] == pids[survivor]

        # Both clients of the survivor are still connected and still hear each other.
        writer.write(b"still here\n")
        heard = await next_frame(chat, "message", "still here")
        assert heard["user"] == NAME
        await read_line(reader, f"[lobby] {NAME}: still here")

        supervised.process.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(supervised.process.wait, PROCESSES_TIMEOUT)
        assert status == 0, supervised.stderr()
    finally:
        writer.close()
        chat.close()
        doomed.close()
    stderr = supervised.stderr()
    assert (
        f"process 0 (port {victim}, pid {pids[victim]}) exited with status -9 (SIGKILL)" in stderr
    )
    assert stderr.count("starting it again in 0.5 s") == 1  # the survivor never restarted
    for pid in (*pids.values(), supervised.child_pids()[victim]):
        assert not alive(pid)


async def until(condition: Callable[[], bool], stderr: Callable[[], str]) -> None:
    """Wait until ``condition()`` holds (at most PROCESSES_TIMEOUT)."""
    deadline = time.monotonic() + PROCESSES_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting; stderr:\n{stderr()}"
        await asyncio.sleep(0.05)


async def until_answered(url: str, stderr: Callable[[], str]) -> HTTPResponse:
    """GET ``url`` until it answers 200 (bounded); the answer."""
    deadline = time.monotonic() + PROCESSES_TIMEOUT
    while True:
        try:
            response = await fetch(url)
        except OSError:  # not listening yet
            response = None
        if response is not None and response.code == 200:
            return response
        assert time.monotonic() < deadline, f"{url} never answered; stderr:\n{stderr()}"
        await asyncio.sleep(0.05)


async def fetch(
    url: str, method: str = "GET", *, form: dict[str, str] | None = None, cookie: str = ""
) -> HTTPResponse:
    """One request (never raises on an error status)."""
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    http = AsyncHTTPClient(force_instance=True)
    try:
        return await http.fetch(
            HTTPRequest(
                url,
                method=method,
                body=body,
                headers=headers,
                follow_redirects=False,
                request_timeout=WAIT,
            ),
            raise_error=False,
        )
    finally:
        http.close()


async def browser_session(base_url: str) -> str:
    """Log NAME in with the ``/login`` form; the Cookie header a chat WebSocket needs."""
    jar: SimpleCookie = SimpleCookie()
    for header in (await fetch(f"{base_url}/login")).headers.get_list("Set-Cookie"):
        jar.load(header)
    xsrf = jar["_xsrf"].value
    form = {"_xsrf": xsrf, "name": NAME, "pwd": PASSWORD, "next": "/"}
    response = await fetch(f"{base_url}/login", "POST", form=form, cookie=f"_xsrf={xsrf}")
    assert response.code == 302, response.body
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return f"mservices_session={jar['mservices_session'].value}"


async def open_chat(base_url: str, cookie: str) -> WebSocketClientConnection:
    """The chat WebSocket of the lobby at ``base_url``."""
    request = HTTPRequest(
        "ws" + base_url.removeprefix("http") + "/message",
        headers={"Cookie": cookie, "Origin": base_url},
        request_timeout=WAIT,
    )
    return await asyncio.wait_for(websocket_connect(request, subprotocols=[CHAT_SUBPROTOCOL]), WAIT)


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


async def read_line(reader: asyncio.StreamReader, wanted: str) -> str:
    """The first TCP chat line containing ``wanted`` (earlier lines skipped)."""
    while True:
        raw = await asyncio.wait_for(reader.readline(), WAIT)
        assert raw, f"closed before {wanted!r}"
        line = raw.decode("utf-8").rstrip("\r\n")
        if wanted in line:
            return line


async def wipe_database(url: str) -> None:
    """Delete every row the processes wrote to the shared MariaDB test database."""
    engine = create_engine(url)
    try:
        await wipe(engine)
    finally:
        await engine.dispose()


def alive(pid: int) -> bool:
    """True while ``pid`` exists (the supervisor reaps its children, so no zombies)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

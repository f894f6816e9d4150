"""Log formats: readable text, or one JSON object per line with the request's fields; the
request id (and user id) on every line a request writes, tracebacks included, never another
request's."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from tornado.httpclient import HTTPRequest
from tornado.web import url
from tornado.websocket import websocket_connect

from repositories.users import UserRepository
from server.app import make_app
from server.handlers.base import ApiHandler
from server.logs import (
    REQUEST_FIELD,
    TEXT_FORMAT,
    ContextFilter,
    JsonFormatter,
    LogContext,
    TextFormatter,
    bind_request,
    bind_user,
    configure_logging,
    detached,
    log_context,
    request_id_from,
)
from server.permissions import CHAT_USE, LOGIN, PUBLIC, Requirement, requires
from server.realtime.pings import SocketPings
from server.realtime.tcp import TcpChatServer
from server.realtime.websocket import CHAT_SUBPROTOCOL
from server.services import Services
from server.settings import Settings
from tests.conftest import Client, serve_app
from tests.grants import grant_in_session
from tests.server.realtime.conftest import form_login

probe_log = logging.getLogger("mservices.test.probe")
PASSWORD = "correct horse battery 42"


def record(message: str, **extra: object) -> logging.LogRecord:
    """A log record of ``mservices.test`` at INFO with ``extra`` attributes."""
    made = logging.LogRecord("mservices.test", logging.INFO, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_json_line_has_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("hello %s"))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO"
    assert entry["logger"] == "mservices.test"
    assert entry["message"] == "hello %s"
    assert entry["time"].endswith("+00:00")


def test_an_access_line_carries_the_request_fields() -> None:
    fields = {"status": 201, "method": "POST", "path": "/user", "remote_ip": "203.0.113.7"}
    entry = json.loads(JsonFormatter().format(record("201 POST /user", **{REQUEST_FIELD: fields})))
    assert {key: entry[key] for key in fields} == fields


def test_an_exception_is_one_json_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize(("log_format", "kind"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging_installs_one_handler_with_the_format(
    log_format: str, kind: type[logging.Formatter]
) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging(log_format)  # type: ignore[arg-type]
        assert len(root.handlers) == 1
        formatter = root.handlers[0].formatter
        assert isinstance(formatter, kind)
        if kind is TextFormatter:
            assert formatter._fmt == TEXT_FORMAT
        assert any(isinstance(each, ContextFilter) for each in root.handlers[0].filters)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


# -- the request context --------------------------------------------------------------------


def in_request(
    make: Callable[[], logging.LogRecord], request_id: str | None, user_id: int | None = None
) -> logging.LogRecord:
    """The record ``make`` builds while a request ``request_id`` of ``user_id`` is handled
    (in a context of its own, so nothing stays bound for the next test), filtered as the
    configured handler does."""

    def inside() -> logging.LogRecord:
        if request_id is not None:
            bind_request(request_id)
            bind_user(user_id)
        made = make()
        ContextFilter().filter(made)
        return made

    return contextvars.copy_context().run(inside)


def failed_record() -> logging.LogRecord:
    """A record of a failure, with its traceback."""
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed\nsecond line")
        failed.exc_info = sys.exc_info()
    return failed


def test_a_text_line_ends_with_the_request_and_user_ids() -> None:
    line = TextFormatter().format(in_request(lambda: record("hello"), "abc", 7))
    assert line.endswith(" INFO mservices.test: hello rid=abc uid=7")


def test_a_text_line_of_an_anonymous_request_has_only_the_request_id() -> None:
    line = TextFormatter().format(in_request(lambda: record("hello"), "abc"))
    assert line.endswith(": hello rid=abc")


def test_a_text_line_outside_a_request_has_no_ids() -> None:
    line = TextFormatter().format(in_request(lambda: record("hello"), None))
    assert line.endswith(": hello")


def test_a_text_traceback_is_headed_by_the_line_naming_its_request() -> None:
    lines = TextFormatter().format(in_request(failed_record, "abc", 7)).splitlines()
    assert lines[0].endswith(": failed rid=abc uid=7")
    assert lines[1] == "second line"
    assert lines[2].startswith("Traceback")
    assert lines[-1] == "ValueError: boom"


def test_an_access_text_line_adds_the_user_id_to_its_own_request_id() -> None:
    fields = {"status": 200, "request_id": "abc"}
    access = in_request(lambda: record("200 GET / rid=abc", **{REQUEST_FIELD: fields}), "abc", 7)
    assert TextFormatter().format(access).endswith(": 200 GET / rid=abc uid=7")


def test_a_json_line_carries_the_request_and_user_ids() -> None:
    entry = json.loads(JsonFormatter().format(in_request(failed_record, "abc", 7)))
    assert (entry["request_id"], entry["user_id"]) == ("abc", 7)
    assert "ValueError: boom" in entry["exception"]


def test_a_json_access_line_without_an_id_of_its_own_takes_the_requests() -> None:
    fields = {"status": 101, "request_id": None}
    access = in_request(lambda: record("101 GET /x", **{REQUEST_FIELD: fields}), "abc", 7)
    entry = json.loads(JsonFormatter().format(access))
    assert (entry["status"], entry["request_id"], entry["user_id"]) == (101, "abc", 7)


def test_a_json_line_outside_a_request_has_no_ids() -> None:
    entry = json.loads(JsonFormatter().format(in_request(lambda: record("hello"), None)))
    assert "request_id" not in entry and "user_id" not in entry


def test_detached_work_runs_outside_the_request() -> None:
    def inside() -> tuple[str | None, str | None]:
        bind_request("abc", 7)
        return detached(lambda: log_context().request_id), log_context().request_id

    assert contextvars.copy_context().run(inside) == (None, "abc")


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("abc-123.trace_4", True), ("x" * 65, False), ("a b", False), ("", False), (None, False)],
)
def test_a_sane_client_request_id_is_kept_and_another_replaced(
    incoming: str | None, kept: bool
) -> None:
    made = request_id_from(incoming)
    assert (made == incoming) is kept
    if not kept:
        assert len(made) == 32


# -- live requests --------------------------------------------------------------------------


class LogProbe(ApiHandler):
    """Logs one line, and one more from background work it starts."""

    async def get(self) -> None:
        probe_log.warning("probe %s", self.request_id)
        done = asyncio.Event()

        async def later() -> None:
            probe_log.warning("background %s", self.request_id)
            done.set()

        self.services.spawn(later())
        await done.wait()
        await self.respond_json(b"{}")


class FailProbe(ApiHandler):
    """A bug."""

    async def get(self) -> None:
        raise RuntimeError("probe failure")


class MeetProbe(ApiHandler):
    """Logs, waits until the other request has logged too, logs again."""

    meeting: asyncio.Barrier

    def initialize(
        self, services: Services, need: Requirement, meeting: asyncio.Barrier | None = None
    ) -> None:
        """Receive the barrier both requests meet at."""
        super().initialize(services, need)
        assert meeting is not None
        self.meeting = meeting

    async def get(self) -> None:
        probe_log.warning("before %s", self.request_id)
        await self.meeting.wait()
        probe_log.warning("after %s", self.request_id)
        await self.respond_json(b"{}")


class Captured(logging.Handler):
    """Keeps every record, filtered as the configured handler is."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record``."""
        self.records.append(record)

    def named(self, prefix: str) -> list[logging.LogRecord]:
        """The records whose message starts with ``prefix``."""
        return [each for each in self.records if each.getMessage().startswith(prefix)]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Every record of INFO and above logged during the test."""
    root = logging.getLogger()
    handler, level = Captured(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
async def probes(settings: Settings, services: Services) -> AsyncIterator[Client]:
    """The application with the probes added."""
    app = make_app(settings, services)
    public = {"services": services, "need": requires(PUBLIC)}
    app.add_handlers(
        r".*$",
        [
            url(r"/probe/log", LogProbe, public),
            url(r"/probe/who", LogProbe, {"services": services, "need": requires(LOGIN)}),
            url(r"/probe/fail", FailProbe, public),
            url(r"/probe/meet", MeetProbe, {**public, "meeting": asyncio.Barrier(2)}),
        ],
    )
    server, base_url = await serve_app(app)
    http = Client(base_url)
    try:
        yield http
    finally:
        http.close()
        server.stop()
        await server.close_all_connections()


async def test_a_request_and_its_background_work_log_with_its_id(
    probes: Client, captured: Captured
) -> None:
    response = await probes.get("/probe/log", headers={"X-Request-Id": "trace-1"})
    assert response.status == 200
    lines = captured.named("probe ") + captured.named("background ")
    assert [each.request_id for each in lines] == ["trace-1", "trace-1"]  # type: ignore[attr-defined]
    (access,) = [each for each in captured.records if each.name == "mservices.access"]
    assert access.request_id == "trace-1"  # type: ignore[attr-defined]


async def test_a_traceback_logged_by_a_failing_request_carries_its_id(
    probes: Client, captured: Captured
) -> None:
    response = await probes.get("/probe/fail")
    assert response.status == 500
    request_id = response.headers["X-Request-Id"]
    (failure,) = [each for each in captured.records if each.exc_info]
    assert failure.request_id == request_id  # type: ignore[attr-defined]
    lines = TextFormatter().format(failure).splitlines()
    assert f"rid={request_id}" in lines[0]
    assert any(line.startswith("Traceback") for line in lines[1:])
    assert lines[-1] == "RuntimeError: probe failure"
    entry = json.loads(JsonFormatter().format(failure))
    assert entry["request_id"] == request_id
    assert "RuntimeError: probe failure" in entry["exception"]


async def test_a_request_refused_before_prepare_logs_with_its_id(
    probes: Client, captured: Captured
) -> None:
    response = await probes.request("TRACE", "/probe/log")
    assert response.status == 405
    (access,) = [each for each in captured.records if each.name == "mservices.access"]
    assert access.request_id == response.headers["X-Request-Id"]  # type: ignore[attr-defined]


async def test_concurrent_requests_each_log_their_own_id(
    probes: Client, captured: Captured
) -> None:
    responses = await asyncio.gather(
        probes.get("/probe/meet", headers={"X-Request-Id": "first"}),
        probes.get("/probe/meet", headers={"X-Request-Id": "second"}),
    )
    assert [response.status for response in responses] == [200, 200]
    lines = captured.named("before ") + captured.named("after ")
    assert len(lines) == 4
    for line in lines:  # each names the request it was written for (args[0])
        assert line.request_id == line.args[0]  # type: ignore[attr-defined, index]
    # Both logged "before" ahead of either "after": the two were really in flight together.
    order = [line.getMessage().split()[0] for line in captured.records if line in lines]
    assert order == ["before", "before", "after", "after"]


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 request on an open connection (kept alive): the status and headers."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in head[1:] if line)
    }
    await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split()[1]), headers


async def test_the_next_request_on_a_kept_alive_connection_does_not_inherit_the_id(
    probes: Client, captured: Captured
) -> None:
    host, port = probes.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        first = await exchange(reader, writer, "/probe/log")
        second = await exchange(reader, writer, "/s/js/chat.js")  # a static file: no id
    finally:
        writer.close()
        await writer.wait_closed()
    assert (first[0], second[0]) == (200, 200)
    access = [each for each in captured.records if each.name == "mservices.access"]
    assert [each.request_id for each in access] == [  # type: ignore[attr-defined]
        first[1]["x-request-id"],
        None,
    ]


async def test_an_authenticated_request_logs_its_user_id(
    probes: Client, captured: Captured
) -> None:
    registered = await probes.post("/user", json_body={"name": "logger", "pwd": PASSWORD})
    assert registered.status == 201, registered.text
    login = await probes.post("/user/login", json_body={"name": "logger", "pwd": PASSWORD})
    token, user_id = login.json()["token"], login.json()["user"]["id"]
    response = await probes.get("/probe/who", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    (line,) = captured.named("probe ")
    assert line.user_id == user_id  # type: ignore[attr-defined]
    assert (
        TextFormatter()
        .format(line)
        .endswith(f"rid={response.headers['X-Request-Id']} uid={user_id}")
    )


# -- chat: a WebSocket's messages, a TCP connection's commands --------------------------------


Said = tuple[str, LogContext]


async def add_chat_user(services: Services, name: str) -> int:
    """A user holding ``chat.use`` with PASSWORD; returns their id."""
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).add(
            name=name, password_hash=await services.passwords.hash(PASSWORD)
        )
        await grant_in_session(session, user.id, CHAT_USE)
        return user.id


@pytest.fixture
def said(services: Services, monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[Said]:
    """Each message said through the hub, with the log context it was said in (what every
    line logged while handling it carries)."""
    said: asyncio.Queue[Said] = asyncio.Queue()
    say = services.hub.say

    async def saying(user: str, room: str, text: str) -> int:
        said.put_nowait((text, log_context()))
        return await say(user, room, text)

    monkeypatch.setattr(services.hub, "say", saying)
    return said


async def test_a_websocket_message_logs_with_its_handshake_id_and_user(
    client: Client, services: Services, said: asyncio.Queue[Said]
) -> None:
    user_id = await add_chat_user(services, "wsuser")
    cookie = await form_login(client, "wsuser", PASSWORD)
    request = HTTPRequest(
        "ws" + client.base_url.removeprefix("http") + "/message",
        headers={"Cookie": cookie, "Origin": client.base_url, "X-Request-Id": "ws-trace"},
    )
    connection = await asyncio.wait_for(
        websocket_connect(request, subprotocols=[CHAT_SUBPROTOCOL]), 5
    )
    try:
        for text in ("first", "second"):
            await connection.write_message(json.dumps({"type": "message", "text": text}))
            said_text, context = await asyncio.wait_for(said.get(), 5)
            assert text in said_text
            assert context == LogContext("ws-trace", user_id)
    finally:
        connection.close()
        while await asyncio.wait_for(connection.read_message(), 5) is not None:
            pass  # until the server's close frame: the stream is closed


async def test_a_tcp_chat_command_logs_with_its_connection_id_and_user(
    services: Services, said: asyncio.Queue[Said]
) -> None:
    user_id = await add_chat_user(services, "tcpuser")
    chat = TcpChatServer(services)
    port = await chat.start("127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"LOGIN tcpuser {PASSWORD}\n".encode())
        for text in ("first", "second"):
            writer.write(f"{text}\n".encode())
            said_text, context = await asyncio.wait_for(said.get(), 5)
            assert said_text == text
            assert context.request_id is not None and context.request_id.startswith("tcp-")
            assert context.user_id == user_id
    finally:
        writer.close()
        await writer.wait_closed()
        await chat.close()


class PingedSocket:
    """A socket that notes the log context each ping is sent in."""

    def __init__(self) -> None:
        self.contexts: list[LogContext] = []
        self.pinged = asyncio.Event()

    def ping(self, data: str | bytes = b"") -> None:
        """Note the context."""
        self.contexts.append(log_context())
        self.pinged.set()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Nothing to close."""


async def test_the_process_wide_pings_a_socket_starts_do_not_log_as_its_request() -> None:
    pings, socket = SocketPings(interval=0.01), PingedSocket()

    def first_socket_opens() -> None:
        bind_request("first-socket", 7)
        pings.add(socket)

    contextvars.copy_context().run(first_socket_opens)
    try:
        await asyncio.wait_for(socket.pinged.wait(), 5)
    finally:
        await pings.close()
    assert socket.contexts[0] == LogContext()

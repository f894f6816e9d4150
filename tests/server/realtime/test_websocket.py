"""The chat WebSocket ``/message`` against the real application served in-process: who may open
it, what a room sends on join, presence by user, reconnect resume, every limit, the language of
error frames, shutdown, and the chat pages (in Chinese and in English).

Every wait is bounded (``asyncio.wait_for``); "nothing arrived" is proven with a marker message
the same connection sends afterwards, never with a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import IOStream
from tornado.websocket import WebSocketClientConnection, websocket_connect

from repositories.chat import ChatRepository
from repositories.users import UserRepository
from server.handlers.base import SESSION_COOKIE
from server.logins import Login
from server.permissions import CHAT_USE, ORDERS_USE
from server.realtime import hub as hub_module
from server.realtime.hub import encode
from server.realtime.limits import MAX_TEXT_CHARS, RATE_BURST, REFUSALS_BEFORE_CLOSE
from server.realtime.websocket import (
    CHAT_SUBPROTOCOL,
    MAX_FRAME_BYTES,
    ChatSocketHandler,
    FrameError,
    message_text,
    open_sockets,
    origin_allowed,
)
from server.services import Services
from server.settings import Settings
from tests.conftest import Client, make_settings
from tests.grants import grant, grant_in_session
from tests.server.handlers.test_user import PASSWORD, bearer, login, register
from tests.server.realtime.conftest import (
    Calls,
    Gate,
    drop_during_handshake,
    form_login,
    form_logout,
)

ROOM = "lobby"
HOSTILE = "<img src=x onerror=alert(1)>"
PARTNER = "https://partner.example"
WAIT = 5.0

Frame = dict[str, Any]


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """Settings on a fresh SQLite database, with one extra origin allowed for the chat socket."""
    return make_settings(tmp_path, sqlite_url, ws_origins=[PARTNER])


class LogIn(Protocol):
    """Creates a user holding ``permissions`` (with the account's ``language``, None: not
    chosen) and logs in; returns the session Cookie header."""

    async def __call__(
        self, name: str, *, permissions: Sequence[str] = (CHAT_USE,), language: str | None = None
    ) -> str: ...


@pytest.fixture
def log_in(client: Client, services: Services) -> LogIn:
    """Create a user (holding ``chat.use`` unless told otherwise) and log in through the
    ``/login`` form; returns the session Cookie header."""

    async def create_and_log_in(
        name: str, *, permissions: Sequence[str] = (CHAT_USE,), language: str | None = None
    ) -> str:
        password = secrets.token_urlsafe(12)
        async with services.sessions() as session, session.begin():
            users = UserRepository(session)
            user = await users.add(name=name, password_hash=await services.passwords.hash(password))
            if language is not None:
                await users.update(user.id, {"language": language})
            if permissions:
                await grant_in_session(session, user.id, *permissions)
        return await form_login(client, name, password)

    return create_and_log_in


class Socket:
    """A test client of ``/message`` that reads JSON frames, each wait bounded."""

    def __init__(self, connection: WebSocketClientConnection) -> None:
        self.connection = connection

    async def raw(self) -> str:
        """The next frame as text (fails when the socket closes instead)."""
        message = await asyncio.wait_for(self.connection.read_message(), WAIT)
        assert message is not None, f"closed with {self.connection.close_code}"
        assert isinstance(message, str)
        return message

    async def frame(self) -> Frame:
        """The next frame, parsed."""
        frame: Frame = json.loads(await self.raw())
        return frame

    async def until(self, accept: Callable[[Frame], bool]) -> tuple[Frame, list[Frame]]:
        """Read up to the first frame ``accept`` takes; returns it and the frames before it."""
        before: list[Frame] = []
        while not accept(frame := await self.frame()):
            before.append(frame)
        return frame, before

    async def joined(self) -> tuple[Frame, list[Frame], Frame]:
        """The frames of joining: history, anything in between (a join), presence."""
        history = await self.frame()
        assert history["type"] == "history", history
        presence, between = await self.until(lambda frame: frame["type"] == "presence")
        return history, between, presence

    async def say(self, text: str) -> None:
        """Send a message frame."""
        await self.connection.write_message(json.dumps({"type": "message", "text": text}))

    async def own_message(self, text: str) -> tuple[Frame, list[Frame]]:
        """Send ``text`` and read up to its echo; returns it and the frames before it."""
        await self.say(text)
        return await self.until(lambda frame: frame["type"] == "message" and frame["text"] == text)

    async def closed(self) -> tuple[int | None, list[str]]:
        """Read until the server closes; returns the close code and the frames read."""
        frames: list[str] = []
        while True:
            message = await asyncio.wait_for(self.connection.read_message(), WAIT)
            if message is None:
                return self.connection.close_code, frames
            assert isinstance(message, str)
            frames.append(message)

    def close(self) -> None:
        """Close from the client side."""
        self.connection.close()


Connect = Callable[..., Awaitable[Socket]]


def ws_url(client: Client, path: str) -> str:
    """The ws:// URL of ``path`` on the test server."""
    return "ws" + client.base_url.removeprefix("http") + path


@pytest.fixture
async def connect(client: Client, services: Services) -> AsyncIterator[Connect]:
    """Open ``/message`` (or another socket path), offering ``mservices.chat.v1`` (JSON frames)
    unless ``subprotocols`` says otherwise (None: the seed's plain text); every connection is
    closed after the test."""
    opened: list[tuple[WebSocketClientConnection, IOStream]] = []

    async def open_socket(
        cookie: str | None,
        *,
        room: str | None = None,
        last_id: int | None = None,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
        path: str = "/message",
        subprotocols: Sequence[str] | None = (CHAT_SUBPROTOCOL,),
    ) -> Socket:
        query = {
            key: str(value)
            for key, value in (("room", room), ("last_id", last_id))
            if value is not None
        }
        all_headers = {"Origin": origin or client.base_url, **(headers or {})}
        if cookie is not None:
            all_headers["Cookie"] = cookie
        target = path + (f"?{urlencode(query)}" if query else "")
        request = HTTPRequest(ws_url(client, target), headers=all_headers, request_timeout=WAIT)
        offered = list(subprotocols) if subprotocols else None
        connection = await asyncio.wait_for(websocket_connect(request, subprotocols=offered), WAIT)
        assert connection.protocol is not None and connection.protocol.stream is not None
        opened.append((connection, connection.protocol.stream))
        return Socket(connection)

    try:
        yield open_socket
    finally:
        await close_quietly(opened)
        await history_written(services)


async def close_quietly(opened: list[tuple[WebSocketClientConnection, IOStream]]) -> None:
    """Close the connections and wait (bounded) until their streams are closed, reading what
    is still queued (a full read queue stops the client from seeing the server's close)."""
    for connection, _ in opened:
        connection.close()
    deadline = asyncio.get_running_loop().time() + WAIT
    for connection, stream in opened:
        while not stream.closed() and asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.read_message(), 0.05)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition`` holds: server-side work finishes on its own schedule."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def history_written(services: Services) -> None:
    """Wait (bounded) until the history writer has stored every queued message, for tests
    that check what the database holds."""
    await eventually(lambda: not services.hub.history._pending, "the history writer to finish")


async def members_settled(services: Services, room: str, count: int) -> None:
    """Wait until ``room`` has ``count`` local members and no leave is still running."""
    await eventually(
        lambda: len(tuple(services.hub.members(room))) == count and len(services.background) == 0,
        f"{count} members in {room}",
    )


# -- who may open the socket ----------------------------------------------------------------


async def test_the_socket_refuses_a_visitor_without_a_session_with_401(
    connect: Connect,
) -> None:
    with pytest.raises(HTTPClientError) as refused:
        await connect(None)
    assert refused.value.code == 401


async def test_the_socket_refuses_a_forged_session_cookie_with_401(connect: Connect) -> None:
    with pytest.raises(HTTPClientError) as refused:
        await connect(f"{SESSION_COOKIE}=2|1:0|10:1700000000|16:mservices_session|4:eA==|00")
    assert refused.value.code == 401


async def test_the_socket_refuses_a_foreign_origin_with_403(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await log_in("alice")
    with pytest.raises(HTTPClientError) as refused:
        await connect(alice, origin="http://evil.example")
    assert refused.value.code == 403
    with pytest.raises(HTTPClientError) as refused_again:
        await connect(alice, origin="http://evil.example", headers={"Sec-Fetch-Site": "cross-site"})
    assert refused_again.value.code == 403


async def test_the_socket_accepts_its_own_host_over_http_or_https_and_configured_origins(
    client: Client, connect: Connect, log_in: LogIn
) -> None:
    alice = await log_in("alice")
    host = client.base_url.removeprefix("http://")
    for origin in (client.base_url, f"https://{host}", PARTNER):
        socket = await connect(alice, origin=origin, headers={"Sec-Fetch-Site": "cross-site"})
        await socket.joined()
        socket.close()


async def test_the_socket_refuses_a_logged_in_user_without_chat_use_with_403_and_joins_nothing(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    bob = await connect(await log_in("bob"))
    await bob.joined()
    no_role = await log_in("alice", permissions=())
    other_permissions = await log_in("carol", permissions=(ORDERS_USE,))

    codes = []
    for cookie in (no_role, other_permissions):
        for room in (None, "other"):
            with pytest.raises(HTTPClientError) as refused:
                await connect(cookie, room=room)
            codes.append(refused.value.code)
    _, before_marker = await bob.own_message("marker")

    assert codes == [403, 403, 403, 403]
    assert before_marker == [], "no join was announced"
    assert await services.hub.online(ROOM) == ["bob"]
    assert await services.hub.online("other") == []
    assert len(open_sockets(services)) == 1
    assert len(services.chat_sessions) == 1 and len(services.chat_pings) == 1


async def test_granting_chat_use_later_lets_the_same_session_open_the_socket(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    cookie = await log_in("alice", permissions=())
    with pytest.raises(HTTPClientError) as refused:
        await connect(cookie)
    assert refused.value.code == 403  # the login and what its roles hold are cached now

    await grant(services, "alice", CHAT_USE)
    socket = await connect(cookie)
    _, between, presence = await socket.joined()

    assert [(frame["type"], frame["user"]) for frame in between] == [("join", "alice")]
    assert presence["users"] == ["alice"]


def test_origin_allowed_compares_scheme_host_and_port() -> None:
    assert origin_allowed("http://chat.example:8000", "chat.example:8000", [])
    assert origin_allowed("https://chat.example:8000/", "CHAT.example:8000", [])
    assert not origin_allowed("http://chat.example:8001", "chat.example:8000", [])
    assert not origin_allowed("http://chat.example.evil", "chat.example", [])
    assert origin_allowed("https://partner.example", "chat.example", ["https://partner.example"])
    assert origin_allowed("https://anyone.example", "chat.example", ["*"])
    assert not origin_allowed("null", "chat.example", [])


async def test_a_bad_room_or_last_id_is_refused_with_400(connect: Connect, log_in: LogIn) -> None:
    alice = await log_in("alice")
    for kwargs in ({"room": "a b"}, {"room": "x" * 65}, {"last_id": -1}):
        with pytest.raises(HTTPClientError) as refused:
            await connect(alice, **kwargs)
        assert refused.value.code == 400


# -- rooms: history, delivery, presence -------------------------------------------------------


async def test_joining_sends_the_last_50_messages_and_who_is_online(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    for number in range(55):
        await services.hub.say("bob", ROOM, f"m{number}")
    alice = await connect(await log_in("alice"))

    history, between, presence = await alice.joined()

    assert history["room"] == ROOM and history["recovered"] is True
    assert [message["text"] for message in history["messages"]] == [
        f"m{number}" for number in range(5, 55)
    ]
    first = history["messages"][0]
    assert set(first) == {"user", "text", "ts", "id"} and first["user"] == "bob"
    ids = [message["id"] for message in history["messages"]]
    assert ids == sorted(ids)
    assert [(frame["type"], frame["user"]) for frame in between] == [("join", "alice")]
    assert presence == {"type": "presence", "room": ROOM, "users": ["alice"]}


async def test_a_message_reaches_everyone_in_the_room_and_no_other_room(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    bob = await connect(await log_in("bob"))
    carol = await connect(await log_in("carol"), room="其他")
    for socket in (alice, bob, carol):
        await socket.joined()
    await alice.until(lambda frame: frame["type"] == "join" and frame["user"] == "bob")

    sent, _ = await alice.own_message("hello")
    received, _ = await bob.until(lambda frame: frame["type"] == "message")
    _, before_marker = await carol.own_message("marker")

    assert received == sent
    assert set(received) == {"type", "room", "user", "text", "ts", "id"}
    assert (received["room"], received["user"], received["text"]) == (ROOM, "alice", "hello")
    assert isinstance(received["id"], int) and isinstance(received["ts"], float)
    assert before_marker == []


async def test_a_plain_text_frame_is_a_message_too(connect: Connect, log_in: LogIn) -> None:
    alice = await connect(await log_in("alice"))
    await alice.joined()

    await alice.connection.write_message("你好 {not json")
    message, _ = await alice.until(lambda frame: frame["type"] == "message")

    assert message["text"] == "你好 {not json"


async def test_messages_are_kept_in_the_chat_message_table(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    await alice.joined()
    sent, _ = await alice.own_message("keep me")

    async def stored() -> list[int]:
        async with services.sessions() as session:
            messages = await ChatRepository(session).recent(ROOM, limit=10)
        return [message.id for message in messages]

    deadline = asyncio.get_running_loop().time() + WAIT
    while sent["id"] not in await stored():
        assert asyncio.get_running_loop().time() < deadline, "the message was never stored"
        await asyncio.sleep(0.02)


async def test_presence_counts_users_not_tabs(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    bob = await connect(await log_in("bob"))
    await bob.joined()
    alice_cookie = await log_in("alice")

    first_tab = await connect(alice_cookie)
    _, between, presence = await first_tab.joined()
    assert [frame["type"] for frame in between] == ["join"]
    assert presence["users"] == ["alice", "bob"]
    joined, _ = await bob.until(lambda frame: frame["type"] == "join")
    assert joined["user"] == "alice"

    second_tab = await connect(alice_cookie)
    _, between, presence = await second_tab.joined()
    assert between == [], "a second tab is not announced"
    assert presence["users"] == ["alice", "bob"]
    _, before_marker = await bob.own_message("after the second tab")
    assert before_marker == []

    first_tab.close()
    await members_settled(services, ROOM, 2)
    _, before_marker = await bob.own_message("after the first tab closed")
    assert before_marker == [], "alice still has a tab open"
    assert await services.hub.online(ROOM) == ["alice", "bob"]

    second_tab.close()
    left, _ = await bob.until(lambda frame: frame["type"] == "leave")
    assert left["user"] == "alice"
    assert await services.hub.online(ROOM) == ["bob"]


# -- reconnect resume -------------------------------------------------------------------------


async def test_reconnecting_with_the_last_id_receives_what_was_missed(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    alice_cookie = await log_in("alice")
    alice = await connect(alice_cookie)
    bob = await connect(await log_in("bob"))
    await alice.joined()
    await bob.joined()
    seen, _ = await alice.own_message("one")
    alice.close()
    await members_settled(services, ROOM, 1)
    await bob.own_message("two")
    await bob.own_message("three")
    await history_written(services)

    again = await connect(alice_cookie, last_id=seen["id"])
    history, _, presence = await again.joined()

    assert history["recovered"] is True
    assert [message["text"] for message in history["messages"]] == ["two", "three"]
    assert presence["users"] == ["alice", "bob"]


async def test_resuming_past_the_limit_says_the_gap_was_not_fully_recovered(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    alice_cookie = await log_in("alice")
    alice = await connect(alice_cookie)
    await alice.joined()
    seen, _ = await alice.own_message("last seen")
    alice.close()
    await members_settled(services, ROOM, 0)
    missed = hub_module.RESUME_LIMIT + 5
    for number in range(missed):
        await services.hub.say("bob", ROOM, f"missed {number}")
    await history_written(services)

    again = await connect(alice_cookie, last_id=seen["id"])
    history, _, _ = await again.joined()

    assert history["recovered"] is False
    texts = [message["text"] for message in history["messages"]]
    assert len(texts) == hub_module.RESUME_LIMIT
    assert texts[-1] == f"missed {missed - 1}"


async def unavailable(*args: object, **kwargs: object) -> None:
    """History's read when the database is away."""
    raise ConnectionError("the database is away")


async def test_a_join_that_fails_answers_an_error_frame_and_closes_with_1011(
    monkeypatch: pytest.MonkeyPatch, services: Services, connect: Connect, log_in: LogIn
) -> None:
    alice_cookie = await log_in("alice")
    monkeypatch.setattr(services.hub.history, "recent", unavailable)
    alice = await connect(alice_cookie)

    code, frames = await alice.closed()

    assert [json.loads(frame)["code"] for frame in frames] == ["unavailable"]
    assert code == 1011
    await members_settled(services, ROOM, 0)


async def test_a_burst_of_joins_reads_the_room_from_the_database_once(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    await services.hub.say("bob", ROOM, "before the burst")
    await history_written(services)
    cookie = await log_in("alice")

    sockets = await asyncio.gather(*(connect(cookie) for _ in range(10)))
    histories = [(await socket.joined())[0] for socket in sockets]

    assert services.hub.recent.loads == 1
    assert all(
        [message["text"] for message in history["messages"]] == ["before the burst"]
        for history in histories
    )


async def test_after_a_failed_join_the_next_join_reads_the_room_again(
    monkeypatch: pytest.MonkeyPatch, services: Services, connect: Connect, log_in: LogIn
) -> None:
    await services.hub.say("bob", ROOM, "kept")
    await history_written(services)
    cookie = await log_in("alice")
    with monkeypatch.context() as patch:
        patch.setattr(services.hub.history, "recent", unavailable)
        code, _ = await (await connect(cookie)).closed()
    assert code == 1011

    history, _, _ = await (await connect(cookie)).joined()

    assert [message["text"] for message in history["messages"]] == ["kept"]


async def test_compression_is_never_negotiated_even_when_the_client_offers_it(
    client: Client, log_in: LogIn
) -> None:
    request = HTTPRequest(
        ws_url(client, "/message"),
        headers={"Origin": client.base_url, "Cookie": await log_in("alice")},
        request_timeout=WAIT,
    )
    connection = await asyncio.wait_for(
        websocket_connect(request, compression_options={}, subprotocols=[CHAT_SUBPROTOCOL]), WAIT
    )
    try:
        socket = Socket(connection)
        await socket.joined()
        message, _ = await socket.own_message("plain")
    finally:
        connection.close()

    assert connection.headers is not None
    assert "Sec-WebSocket-Extensions" not in connection.headers
    assert message["text"] == "plain"


async def test_a_first_frame_larger_than_the_send_buffer_is_still_written(
    monkeypatch: pytest.MonkeyPatch, services: Services, connect: Connect, log_in: LogIn
) -> None:
    monkeypatch.setattr(ChatSocketHandler, "send_buffer_bytes", 1024)
    for number in range(20):
        await services.hub.say("bob", ROOM, f"{number} " + "字" * 100)
    alice = await connect(await log_in("alice"))

    history, _, _ = await alice.joined()

    assert len(json.dumps(history, ensure_ascii=False).encode("utf-8")) > 1024
    assert len(history["messages"]) == 20
    _, _ = await alice.own_message("still open")


async def test_one_task_pings_every_chat_socket_and_an_answering_client_stays_open(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    await alice.joined()
    [handler] = [
        socket for socket in open_sockets(services) if isinstance(socket, ChatSocketHandler)
    ]
    assert handler.ws_connection is not None
    assert handler.ping_interval is None, "no ping task per socket"
    assert len(services.chat_pings) == 1

    for _ in range(3):  # each sweep closes a socket that did not answer the one before
        assert services.chat_pings.sweep() == 0
        await eventually(lambda: not services.chat_pings._waiting.get(handler, True), "the pong")
    _, before = await alice.own_message("still open")

    assert before == []
    alice.close()
    await eventually(lambda: len(services.chat_pings) == 0, "the socket to be forgotten")


# -- limits -----------------------------------------------------------------------------------


async def test_a_frame_over_64_kib_closes_the_socket_with_1009(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    await alice.joined()

    await alice.connection.write_message("x" * (MAX_FRAME_BYTES + 1))
    code, _ = await alice.closed()

    assert code == 1009


async def test_text_over_2000_characters_gets_an_error_frame_and_the_socket_stays_open(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    await alice.joined()

    await alice.say("字" * (MAX_TEXT_CHARS + 1))
    error = await alice.frame()
    await alice.connection.write_message("x" * MAX_FRAME_BYTES)  # the largest frame allowed
    second_error = await alice.frame()
    longest, _ = await alice.own_message("字" * MAX_TEXT_CHARS)

    assert (error["type"], error["code"]) == ("error", "too_long")
    assert (second_error["type"], second_error["code"]) == ("error", "too_long")
    assert len(longest["text"]) == MAX_TEXT_CHARS


async def test_frames_that_are_not_messages_get_an_error_frame(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    await alice.joined()

    await alice.connection.write_message(b"\x00binary", binary=True)
    await alice.connection.write_message(json.dumps({"type": "join", "text": "x"}))
    await alice.connection.write_message(json.dumps({"type": "message", "text": 5}))
    await alice.say("   ")
    codes = [(await alice.frame())["code"] for _ in range(4)]
    _, before = await alice.own_message("still open")

    assert codes == ["bad_frame", "bad_frame", "bad_frame", "empty"]
    assert before == []


async def test_a_deeply_nested_frame_gets_an_error_frame_and_the_socket_stays_open(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    await alice.joined()

    await alice.connection.write_message('{"a":' + "[" * 50_000)
    frame = await alice.frame()
    _, before = await alice.own_message("still open")

    assert (frame["type"], frame["code"]) == ("error", "bad_frame")
    assert before == []


async def test_a_lone_surrogate_gets_an_error_frame_and_the_room_and_history_carry_on(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    bob = await connect(await log_in("bob"))
    await alice.joined()
    await bob.joined()
    await alice.until(lambda frame: frame["type"] == "join" and frame["user"] == "bob")

    # Valid JSON whose text can never be UTF-8: json.dumps escapes the surrogate as \ud800.
    await alice.connection.write_message(json.dumps({"type": "message", "text": "a\ud800b"}))
    error = await alice.frame()
    sent, _ = await alice.own_message("after")
    received, before = await bob.until(lambda frame: frame["type"] == "message")
    await history_written(services)
    late, _, _ = await (await connect(await log_in("carol"))).joined()

    assert (error["type"], error["code"]) == ("error", "bad_text")
    assert received == sent and before == []
    assert [message["text"] for message in late["messages"]] == ["after"]
    async with services.sessions() as session:
        stored = await ChatRepository(session).recent(ROOM, limit=10)
    assert [message.text for message in stored] == ["after"]


async def test_flooding_gets_error_frames_then_close_1008(
    monkeypatch: pytest.MonkeyPatch, connect: Connect, log_in: LogIn
) -> None:
    # No refill during the test, so the count is exact however slow the machine is; the refill
    # rate itself is tested on TokenBucket (test_limits.py).
    monkeypatch.setattr(ChatSocketHandler, "rate_per_second", 0.001)
    alice = await connect(await log_in("alice"))
    await alice.joined()

    sent = RATE_BURST + REFUSALS_BEFORE_CLOSE + 5
    for number in range(sent):
        await alice.connection.write_message(f"flood {number}")
    code, frames = await alice.closed()

    kinds = [json.loads(frame)["type"] for frame in frames]
    assert kinds == ["message"] * RATE_BURST + ["error"] * (REFUSALS_BEFORE_CLOSE - 1)
    assert json.loads(frames[-1])["code"] == "rate_limited"
    assert code == 1008


# -- the language of error frames -------------------------------------------------------------


async def refusal_of_an_empty_message(socket: Socket) -> Frame:
    """Join, send a blank message, and return the error frame it gets (past any join or leave
    of another socket)."""
    await socket.joined()
    await socket.say("   ")
    frame, _ = await socket.until(lambda frame: frame["type"] == "error")
    assert frame["code"] == "empty"
    return frame


async def test_error_frames_are_in_chinese_by_default_and_keep_their_code(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))

    assert (await refusal_of_an_empty_message(alice))["text"] == "消息是空的"
    await alice.say("字" * (MAX_TEXT_CHARS + 1))
    too_long = await alice.frame()
    assert (too_long["code"], too_long["text"]) == ("too_long", "一条消息最多 2000 个字符")
    await alice.connection.write_message(json.dumps({"type": "join"}))
    bad = await alice.frame()
    assert bad["code"] == "bad_frame"
    assert bad["text"] == 'JSON 帧必须是 {"type": "message", "text": "..."}'


async def test_error_frames_follow_the_handshakes_accept_language(
    connect: Connect, log_in: LogIn
) -> None:
    cookie = await log_in("alice")
    english = await connect(cookie, headers={"Accept-Language": "en-GB,en;q=0.9,zh;q=0.1"})
    chinese = await connect(cookie, headers={"Accept-Language": "zh-CN,zh;q=0.9"})

    assert (await refusal_of_an_empty_message(english))["text"] == "the message is empty"
    assert (await refusal_of_an_empty_message(chinese))["text"] == "消息是空的"


async def test_error_frames_follow_the_language_cookie_then_the_account(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await log_in("alice")
    bob = await log_in("bob", language="zh_CN")
    by_cookie = await connect(f"{alice}; mservices_lang=en_US")
    by_account = await connect(f"{bob}; mservices_lang=en_US", headers={"Accept-Language": "en"})

    assert (await refusal_of_an_empty_message(by_cookie))["text"] == "the message is empty"
    assert (await refusal_of_an_empty_message(by_account))["text"] == "消息是空的"


async def test_a_slow_consumer_is_closed_with_4008_while_a_fast_one_keeps_up(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    fast = await connect(await log_in("alice"))
    await fast.joined()
    slow = await connect(await log_in("bob"))
    await slow.joined()
    await fast.until(lambda frame: frame["type"] == "join")
    slow_side = next(
        socket
        for socket in open_sockets(services)
        if isinstance(socket, ChatSocketHandler) and socket.user == "bob"
    )
    text = "x" * 32_000
    count = {"published": 0, "received": 0}

    async def read_fast() -> None:
        # Only the messages: bob's leave comes too, as soon as the server closes him.
        while (message := await fast.connection.read_message()) is not None:
            if isinstance(message, str) and message.startswith('{"type":"message"'):
                count["received"] += 1

    reader = asyncio.ensure_future(read_fast())
    # Publish (as another process would) while the fast client keeps up and the slow one reads
    # nothing, until the server gives up on the slow one; bounded at 200 MB.
    while slow_side.ws_connection is not None:
        assert count["published"] < 6_000, "the slow consumer was never closed"
        # Each a new message: the hub delivers a message id once.
        payload = encode("message", ROOM, user="carol", text=text, ts=0.0, id=count["published"])
        await services.hub.bus.publish(ROOM, payload)
        count["published"] += 1
        await eventually(
            lambda: count["published"] - count["received"] < 16, "the fast client to keep up"
        )
    await eventually(
        lambda: count["received"] == count["published"], "the fast client to read everything"
    )
    reader.cancel()

    code, frames = await slow.closed()

    assert code == 4008
    assert len(frames) < count["published"]
    assert fast.connection.protocol is not None, "the fast client is still connected"
    _, _ = await fast.own_message("still here")


async def test_hostile_text_is_delivered_verbatim_as_inert_json_text(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    bob = await connect(await log_in("bob"))
    await alice.joined()
    await bob.joined()

    await alice.say(HOSTILE)
    while '"type":"message"' not in (raw := await bob.raw()):
        pass

    assert HOSTILE in raw, "sent as it was typed, neither escaped nor stripped"
    assert json.loads(raw)["text"] == HOSTILE


# -- units: frames and encoding ---------------------------------------------------------------


def test_message_text_accepts_json_messages_and_plain_text() -> None:
    assert message_text(json.dumps({"type": "message", "text": "hi"})) == "hi"
    assert message_text("hi") == "hi"
    assert message_text('{"type": "message"') == '{"type": "message"'
    for frame in (b"hi", '{"type": "other"}', '{"text": "x"}', "", " \n", "x" * 2001):
        with pytest.raises(FrameError):
            message_text(frame)


def test_message_text_refuses_text_that_cannot_be_utf_8() -> None:
    for text in ("\ud800", "a\udfffb", "\udc00\ud800"):
        with pytest.raises(FrameError) as refused:
            message_text(json.dumps({"type": "message", "text": text}))
        assert refused.value.code == "bad_text"
    assert message_text(json.dumps({"type": "message", "text": "😀"})) == "😀"


def test_message_text_in_plain_mode_takes_every_text_frame_as_the_message() -> None:
    frame = json.dumps({"type": "message", "text": "hi"})
    assert message_text(frame, plain=True) == frame
    assert message_text('{"type": "other"}', plain=True) == '{"type": "other"}'
    for refused in (b"hi", "", " \n", "x" * 2001):
        with pytest.raises(FrameError):
            message_text(refused, plain=True)


# -- handshakes cut short ----------------------------------------------------------------------


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch, services: Services) -> Gate:
    """Hold every chat handshake in ``prepare()`` (at the session lookup) until released."""
    held = Gate()
    resolve = services.logins.resolve

    async def gated(token: str) -> Login | None:
        await held.passage()
        return await resolve(token)

    monkeypatch.setattr(services.logins, "resolve", gated)
    return held


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Record every call of ``ChatSocketHandler.open`` and ``on_close`` (each still runs)."""
    seen = Calls()
    on_close, open_ = ChatSocketHandler.on_close, ChatSocketHandler.open

    def recorded_on_close(self: ChatSocketHandler) -> None:
        seen.order.append("on_close")
        try:
            on_close(self)
        except BaseException as error:
            seen.failures.append(error)
            raise
        finally:
            seen.closed.set()

    async def recorded_open(self: ChatSocketHandler) -> None:
        try:
            await open_(self)
        except BaseException as error:
            seen.failures.append(error)
            raise
        finally:
            seen.order.append("open")
            seen.opened.set()

    monkeypatch.setattr(ChatSocketHandler, "on_close", recorded_on_close)
    monkeypatch.setattr(ChatSocketHandler, "open", recorded_open)
    return seen


async def test_a_client_that_drops_during_the_handshake_leaves_nothing_registered(
    services: Services, client: Client, log_in: LogIn, gate: Gate, calls: Calls
) -> None:
    await drop_during_handshake(client.base_url, "/message", gate, await log_in("alice"))
    await asyncio.wait_for(calls.closed.wait(), WAIT)  # Tornado runs on_close during prepare()
    gate.release.set()
    await asyncio.wait_for(calls.opened.wait(), WAIT)  # ... and open() after it

    assert calls.order == ["on_close", "open"]
    assert calls.failures == []
    assert len(open_sockets(services)) == 0
    assert len(services.chat_sessions) == 0 and len(services.chat_pings) == 0
    await members_settled(services, ROOM, 0)
    assert await services.hub.online(ROOM) == []


# -- shutdown ---------------------------------------------------------------------------------


async def test_close_all_closes_every_socket_with_1001_and_announces_the_leave(
    services: Services, connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"))
    bob = await connect(await log_in("bob"), room="other")
    await alice.joined()
    await bob.joined()
    registry = open_sockets(services)
    assert len(registry) == 2

    closing = asyncio.ensure_future(registry.close_all(1001))
    results = [await alice.closed(), await bob.closed()]
    closed = await asyncio.wait_for(closing, WAIT)

    assert [code for code, _ in results] == [1001, 1001]
    assert closed == 2 and len(registry) == 0
    await members_settled(services, ROOM, 0)
    assert await services.hub.online(ROOM) == []


async def test_logging_out_closes_that_sessions_sockets_with_4001_and_no_one_elses(
    services: Services, client: Client, connect: Connect, log_in: LogIn
) -> None:
    alice_session = await log_in("alice")
    alice, alice_tab = await connect(alice_session), await connect(alice_session, room="other")
    bob = await connect(await log_in("bob"))
    for socket in (alice, alice_tab, bob):
        await socket.joined()
    assert len(services.chat_sessions) == 3

    await form_logout(client, alice_session)

    assert [(await alice.closed())[0], (await alice_tab.closed())[0]] == [4001, 4001]
    await bob.own_message("still connected")
    assert len(services.chat_sessions) == 1
    with pytest.raises(HTTPClientError) as refused:
        await connect(alice_session)
    assert refused.value.code == 401


async def test_a_logged_out_user_leaves_the_room_at_once_even_when_their_client_never_answers(
    services: Services,
    client: Client,
    connect: Connect,
    log_in: LogIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice_session = await log_in("alice")
    alice = await connect(alice_session)
    await alice.joined()
    bob = await connect(await log_in("bob"))
    await bob.joined()
    protocol = alice.connection.protocol
    assert protocol is not None and protocol.stream is not None
    # A frozen tab: the server's close frame is never answered, so on_close does not run.
    monkeypatch.setattr(protocol, "close", lambda *args, **kwargs: None)

    await form_logout(client, alice_session)

    leave, _ = await bob.until(lambda frame: frame["type"] == "leave")
    assert leave["user"] == "alice"
    assert await services.hub.online(ROOM) == ["bob"]
    assert len(open_sockets(services)) == 2, "alice's closing handshake is still waiting"
    protocol.stream.close()


async def test_revoking_the_browser_session_from_another_session_closes_its_socket_with_4001(
    services: Services, client: Client, connect: Connect
) -> None:
    await register(client, "alice")
    await grant(services, "alice", CHAT_USE)
    browser = await connect(await form_login(client, "alice", PASSWORD))
    await browser.joined()
    token = await login(client, "alice")
    listed = await client.get("/user/sessions", headers=bearer(token))
    [other] = [item for item in listed.json()["items"] if not item["current"]]

    revoked = await client.request("DELETE", f"/user/sessions/{other['id']}", headers=bearer(token))

    assert revoked.status == 200, revoked.text
    assert (await browser.closed())[0] == 4001


# -- the pages --------------------------------------------------------------------------------


async def test_the_chat_pages_send_an_anonymous_visitor_to_the_login_form(client: Client) -> None:
    for path in ("/chat", "/robbit"):
        response = await client.get(path)
        assert response.status == 302
        assert response.headers["Location"] == f"/login?{urlencode({'next': path})}"


async def test_the_chat_pages_show_the_room_to_a_user_holding_chat_use(
    client: Client, log_in: LogIn
) -> None:
    cookie = {"Cookie": await log_in("alice")}

    chat = await client.get("/chat", headers=cookie)
    robbit = await client.get("/robbit", headers=cookie)  # alice's own support conversation
    odd = await client.get("/chat?" + urlencode({"room": HOSTILE}), headers=cookie)

    assert chat.status == robbit.status == odd.status == 200
    assert 'data-room="lobby"' in chat.text and 'data-me="alice"' in chat.text
    assert "/s/js/chat.js" in chat.text and "<title>聊天室" in chat.text
    assert re.search(r'data-room="support-[0-9]+"', robbit.text), "her own conversation"
    assert "<title>客服在线" in robbit.text
    assert 'data-room="lobby"' in odd.text and HOSTILE not in odd.text


SCRIPT_TEXTS = re.compile(r'<script type="application/json" id="script-texts">(.*?)</script>')
CHAT_PAGE_ZH = ("<title>聊天室", "连接中…", 'placeholder="输入消息，回车发送"', ">发送</button>")
CHAT_PAGE_EN = (
    "<title>Chat room",
    "Connecting…",
    'placeholder="Type a message and press Enter to send"',
    ">Send</button>",
    'aria-label="Users online"',
)


def page_and_script_texts(html: str) -> tuple[str, dict[str, str]]:
    """The page without its scripts' messages, and those messages (id to translation)."""
    match = SCRIPT_TEXTS.search(html)
    assert match is not None, "the page carries its scripts' messages"
    texts: dict[str, str] = json.loads(match.group(1))
    return html[: match.start()] + html[match.end() :], texts


async def test_the_chat_page_speaks_chinese_by_default_and_english_when_asked(
    client: Client, log_in: LogIn
) -> None:
    cookie = await log_in("alice")

    chinese = await client.get("/chat", headers={"Cookie": cookie})
    by_header = await client.get("/chat", headers={"Cookie": cookie, "Accept-Language": "en"})
    by_cookie = await client.get("/chat", headers={"Cookie": f"{cookie}; mservices_lang=en_US"})
    robbit = await client.get("/robbit", headers={"Cookie": cookie, "Accept-Language": "en"})

    page, scripts = page_and_script_texts(chinese.text)
    assert all(text in page for text in CHAT_PAGE_ZH)
    assert not any(text in page for text in CHAT_PAGE_EN)
    # The script's sentences come with the page, in its language.
    assert scripts["{user} joined the chat room"] == "{user} 进入聊天室"
    assert scripts["Disconnected; reconnecting in {seconds} s"] == "连接已断开，{seconds} 秒后重连"
    for english in (by_header, by_cookie):
        page, scripts = page_and_script_texts(english.text)
        assert all(text in page for text in CHAT_PAGE_EN)
        assert not any(text in page for text in CHAT_PAGE_ZH)
        assert scripts["{user} joined the chat room"] == "{user} joined the chat room"
        assert scripts["Log in again"] == "Log in again"
    assert "<title>Live support" in robbit.text and "客服在线" not in robbit.text


async def test_the_chat_pages_answer_403_to_a_logged_in_user_without_chat_use(
    client: Client, log_in: LogIn
) -> None:
    for name, permissions in (("alice", ()), ("carol", (ORDERS_USE,))):
        cookie = {"Cookie": await log_in(name, permissions=permissions)}
        for path in ("/chat", "/robbit?room=客服"):
            page = await client.get(path, headers=cookie)
            assert page.status == 403, (name, path)
            assert "/s/js/chat.js" not in page.text and "data-room" not in page.text


async def test_the_ticker_page_is_open_to_everyone(client: Client) -> None:
    page = await client.get("/ticker/page")

    assert page.status == 200
    assert 'data-path="/ticker"' in page.text and "/s/js/ticker.js" in page.text


async def test_the_ticker_page_speaks_the_readers_language_and_marks_the_seeds_lines(
    client: Client,
) -> None:
    chinese = await client.get("/ticker/page")
    english = await client.get("/ticker/page", headers={"Accept-Language": "en-US"})

    assert "<h1>数字播报</h1>" in chinese.text and "再来一次" in chinese.text
    assert "<h1>Ticker</h1>" in english.text and ">Run again</button>" in english.text
    assert "再来一次" not in english.text and "连接中" not in english.text
    # What the socket sends is the seed's wire text (您好！<ip>), whatever the page's language.
    for page in (chinese, english):
        assert '<ol class="ticker-lines" id="ticker-lines" aria-live="polite" lang="zh-CN">' in (
            page.text
        )


async def test_a_socket_whose_handshake_ends_after_close_all_is_closed_with_1001(
    services: Services, connect: Connect, log_in: LogIn, gate: Gate
) -> None:
    cookie = await log_in("alice")
    opening = asyncio.ensure_future(connect(cookie))
    await asyncio.wait_for(gate.entered.wait(), WAIT)
    registry = open_sockets(services)

    assert await asyncio.wait_for(registry.close_all(1001, stopping=True), WAIT) == 0
    gate.release.set()
    code, frames = await (await opening).closed()

    assert code == 1001 and frames == []
    await members_settled(services, ROOM, 0)
    assert len(registry) == 0 and await services.hub.online(ROOM) == []


# -- the seed's plain-text format (no subprotocol) ----------------------------------------------


def offered_protocol(socket: Socket) -> str | None:
    """The subprotocol the server selected in its handshake answer (None: none)."""
    assert socket.connection.headers is not None
    return socket.connection.headers.get("Sec-WebSocket-Protocol")


async def test_a_client_offering_no_subprotocol_gets_the_seeds_plain_lines(
    connect: Connect, log_in: LogIn
) -> None:
    alice = await connect(await log_in("alice"), subprotocols=None)

    assert offered_protocol(alice) is None
    assert await alice.raw() == "alice 进入聊天室"
    # Every text frame is the message, braces and all; no presence frame came in between.
    await alice.connection.write_message("hello")
    assert await alice.raw() == "alice 说: hello"
    await alice.connection.write_message('{"type": "message", "text": "x"}')
    assert await alice.raw() == 'alice 说: {"type": "message", "text": "x"}'


async def test_a_client_offering_the_subprotocol_gets_json_frames(
    connect: Connect, log_in: LogIn
) -> None:
    cookie = await log_in("alice")
    alice = await connect(cookie, subprotocols=["chat.v2", CHAT_SUBPROTOCOL])

    assert offered_protocol(alice) == CHAT_SUBPROTOCOL
    history, _, presence = await alice.joined()
    assert (history["type"], presence["users"]) == ("history", ["alice"])
    # alice is in the room already: her second connection announces no join.
    stranger = await connect(cookie, subprotocols=["chat.v2"])
    assert offered_protocol(stranger) is None, "an unknown subprotocol is not selected"
    await stranger.connection.write_message("from the stranger")
    assert await stranger.raw() == "alice 说: from the stranger"


async def test_plain_and_json_members_share_the_room_and_its_history(
    connect: Connect, log_in: LogIn
) -> None:
    bob = await connect(await log_in("bob"))
    await bob.joined()
    alice = await connect(await log_in("alice"), subprotocols=None)
    assert await alice.raw() == "alice 进入聊天室"
    joined, _ = await bob.until(lambda frame: frame["type"] == "join")
    assert joined["user"] == "alice"

    await alice.connection.write_message("hi bob")
    assert await alice.raw() == "alice 说: hi bob"
    heard, _ = await bob.until(lambda frame: frame["type"] == "message")
    assert (heard["user"], heard["text"]) == ("alice", "hi bob")
    await bob.say("hi alice")
    assert await alice.raw() == "bob 说: hi alice"

    carol = await connect(await log_in("carol"), subprotocols=None)
    assert [await carol.raw() for _ in range(3)] == [
        "alice 说: hi bob",
        "bob 说: hi alice",
        "carol 进入聊天室",
    ]
    assert await alice.raw() == "carol 进入聊天室"

    carol.close()
    assert await alice.raw() == "carol 离开聊天室"
    left, _ = await bob.until(lambda frame: frame["type"] == "leave")
    assert left["user"] == "carol"


async def test_plain_lines_and_errors_are_in_the_handshakes_language(
    connect: Connect, log_in: LogIn
) -> None:
    cookie = await log_in("alice")
    english = await connect(cookie, subprotocols=None, headers={"Accept-Language": "en-US"})
    assert await english.raw() == "alice joined the chat room"
    chinese = await connect(cookie, subprotocols=None)

    await english.connection.write_message("   ")
    assert await english.raw() == "the message is empty"
    await chinese.connection.write_message("")
    assert await chinese.raw() == "消息是空的"
    await chinese.connection.write_message("你好")
    assert await chinese.raw() == "alice 说: 你好"
    assert await english.raw() == "alice says: 你好"


async def test_plain_lines_are_html_escaped_for_the_seeds_page(
    connect: Connect, log_in: LogIn
) -> None:
    bob = await connect(await log_in("bob"))
    await bob.joined()
    alice = await connect(await log_in("alice"), subprotocols=None)
    assert await alice.raw() == "alice 进入聊天室"

    await alice.connection.write_message(HOSTILE)

    assert await alice.raw() == "alice 说: &lt;img src=x onerror=alert(1)&gt;"
    heard, _ = await bob.until(lambda frame: frame["type"] == "message")
    assert heard["text"] == HOSTILE, "stored and sent to JSON readers as it was typed"

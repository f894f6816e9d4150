"""The TCP chat, spoken to over real loopback sockets: login (accounts and throttling of the API),
chatting, commands, limits, slow readers, shutdown, the seed's blocking ``socket`` client, and
the language of the server's lines (Chinese until LANG or the account says otherwise).

Most tests speak English (``LANG en_US`` before ``LOGIN``, what ``LineClient.log_in`` does), so
their expected lines read as the protocol's reference does; the language tests and a few others
check the Chinese a client gets by default."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from repositories.models import AuditEntry, AuthToken
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from server.admin import Admin
from server.invalidation import Event
from server.permissions import CHAT_USE, ORDERS_USE
from server.principal import Principal
from server.realtime.limits import MAX_TEXT_CHARS, REFUSALS_BEFORE_CLOSE
from server.realtime.tcp import LINE_LIMIT, TcpChatServer, render
from server.services import Services
from tests.conftest import Client
from tests.grants import grant, grant_in_session

TIMEOUT = 10.0
"""The longest any single wait in these tests may take."""
HOST = "127.0.0.1"
PASSWORD = "correct horse battery"
GREETING_ZH = "* mservices 聊天室。登录：LOGIN <name> <password> (English: LANG en_US)"
"""The first line of every connection: Chinese, naming the switch to English in English."""
GOODBYE = "* the server is shutting down; goodbye"
GOODBYE_ZH = "* 服务器正在关闭，再见"
SESSION_ENDED = "* your session was ended; goodbye"
REFUSED_CHAT_ZH = "! 你的角色没有授予权限 chat.use，再见"


async def add_user(
    services: Services,
    name: str,
    password: str = PASSWORD,
    *,
    permissions: tuple[str, ...] = (CHAT_USE,),
    language: str | None = None,
) -> None:
    """Register ``name`` the way the API does, holding ``permissions`` (the TCP door needs
    ``chat.use``; pass ``()`` for an account without it), with the account's ``language``
    (None: not chosen)."""
    async with services.sessions() as session, session.begin():
        users = UserRepository(session)
        user = await users.add(name=name, password_hash=await services.passwords.hash(password))
        if language is not None:
            await users.update(user.id, {"language": language})
        if permissions:
            await grant_in_session(session, user.id, *permissions)


class LineClient:
    """A test client: sends lines, reads the server's lines with bounded waits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, line: str | bytes) -> None:
        """Send one line (LF added)."""
        data = line.encode("utf-8") if isinstance(line, str) else line
        self.writer.write(data + b"\n")
        await self.writer.drain()

    async def line(self) -> str | None:
        """The next line without its CRLF; None at the end of the stream."""
        raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        if not raw:
            return None
        assert raw.endswith(b"\r\n"), raw
        return raw[:-2].decode("utf-8")

    async def until(self, *wanted: str) -> list[str]:
        """Lines up to and including the first that contains one of ``wanted``."""
        seen: list[str] = []
        while True:
            line = await self.line()
            assert line is not None, f"connection closed before {wanted!r}; saw {seen}"
            seen.append(line)
            if any(text in line for text in wanted):
                return seen

    async def rest(self) -> list[str]:
        """Every line until the server closes the connection."""
        seen: list[str] = []
        while (line := await self.line()) is not None:
            seen.append(line)
        return seen

    async def speak(self, language: str) -> str | None:
        """Send ``LANG language``; the server's answer."""
        await self.send(f"LANG {language}")
        return await self.line()

    async def log_in(
        self, name: str, password: str = PASSWORD, *, language: str | None = "en_US"
    ) -> list[str]:
        """Log in (after ``LANG language`` unless None) and read up to the presence line of
        the lobby (in English ``* online in lobby:``, in Chinese ``* lobby 在线：``)."""
        await self.until("LOGIN <name> <password>")
        if language is not None:
            assert (await self.speak(language) or "").startswith("* ")
        await self.send(f"LOGIN {name} {password}")
        return await self.until("* online in lobby:", "* lobby 在线：")

    async def close(self) -> None:
        """Close our side (the server may already have)."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass(frozen=True, slots=True)
class Chat:
    """A started TcpChatServer and its port."""

    server: TcpChatServer
    port: int


Connect = Callable[[], Awaitable[LineClient]]
Start = Callable[..., Awaitable[Chat]]


@pytest.fixture
async def start(services: Services) -> AsyncIterator[Start]:
    """Start a TcpChatServer (constructor options as keywords) on a free loopback port; every
    one started is closed afterwards."""
    started: list[TcpChatServer] = []

    async def starter(**options: Any) -> Chat:
        server = TcpChatServer(services, **options)
        started.append(server)
        return Chat(server, await server.start(HOST, 0))

    yield starter
    for server in started:
        await asyncio.wait_for(server.close(), TIMEOUT)


@pytest.fixture
async def chat(start: Start) -> Chat:
    """A TcpChatServer with the default options."""
    return await start()


@pytest.fixture
async def connect(chat: Chat) -> AsyncIterator[Connect]:
    """Open clients to ``chat``; closed afterwards."""
    clients: list[LineClient] = []

    async def opener() -> LineClient:
        client = await open_client(chat)
        clients.append(client)
        return client

    yield opener
    for client in clients:
        await client.close()


async def open_client(chat: Chat) -> LineClient:
    """A client connected to ``chat``."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, chat.port), TIMEOUT)
    return LineClient(reader, writer)


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.01)  # presence changes have no event to wait on


# --- login ------------------------------------------------------------------------------------


async def test_a_user_with_the_right_password_is_greeted_and_put_in_the_lobby_in_chinese(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")  # no language chosen: the default, Chinese
    alice = await connect()
    assert await alice.line() == GREETING_ZH
    await alice.send(f"LOGIN alice {PASSWORD}")
    lines = await alice.until("* lobby 在线：")
    assert lines == [
        "* alice，你好！你在 lobby。输入 /help 查看命令",
        "* lobby：还没有消息",
        "* alice 进入 lobby",
        "* lobby 在线：alice",
    ]
    assert await services.hub.online("lobby") == ["alice"]


async def test_in_english_the_same_login_reads_in_english(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.until("LOGIN")
    assert await alice.speak("en_US") == "* language set to English"
    await alice.send(f"LOGIN alice {PASSWORD}")
    assert await alice.until("* online in lobby:") == [
        "* hello alice; you are in lobby. Try /help",
        "* lobby: no messages yet",
        "* alice joined lobby",
        "* online in lobby: alice",
    ]


async def test_a_password_with_spaces_and_a_quoted_name_with_spaces_log_in(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "ann lee", "  spaces  inside  ")
    client = await connect()
    await client.until("LOGIN")
    await client.speak("en")
    await client.send('LOGIN "ann lee"   spaces  inside  ')
    lines = await client.until("* online in lobby:")
    assert lines[-1] == "* online in lobby: ann lee"


async def test_a_wrong_password_gets_the_api_message_and_may_be_retried(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    client = await connect()
    await client.until("LOGIN")
    await client.speak("en_US")
    await client.send("LOGIN alice not the password")
    assert await client.line() == "! wrong name or password"
    await client.send("LOGIN nobody whatever")
    assert await client.line() == "! wrong name or password"
    await client.send(f"LOGIN alice {PASSWORD}")
    assert (await client.until("* online in lobby:"))[-1] == "* online in lobby: alice"


async def test_lines_before_login_are_answered_with_how_to_log_in_in_chinese(
    services: Services, connect: Connect
) -> None:
    client = await connect()
    await client.until("LOGIN")
    await client.send("hello?")
    assert await client.line() == "! 请先登录：LOGIN <name> <password>"
    await client.send("LOGIN alice")
    assert await client.line() == (
        '! 用法：LOGIN <name> <password>（用户名含空格时写在双引号里：LOGIN "a b" pw）'
    )
    await client.send("")  # ignored
    await client.send("/who")
    assert await client.line() == "! 请先登录：LOGIN <name> <password>"
    await client.send("LANG fr_FR")
    assert await client.line() == "! 用法：LANG zh_CN|en_US"
    await client.send("LANG en-GB")  # any English is ours
    assert await client.line() == "* language set to English"
    await client.send("hello?")
    assert await client.line() == "! log in first: LOGIN <name> <password>"
    await client.send("LOGIN alice")
    line = await client.line()
    assert line is not None
    assert line.startswith("! usage: LOGIN <name> <password>")
    assert await services.hub.online("lobby") == []


async def test_three_refused_logins_close_the_connection(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    client = await connect()
    await client.until("LOGIN")
    await client.speak("en_US")
    for _ in range(3):
        await client.send("LOGIN alice wrong")
    assert await client.rest() == [
        "! wrong name or password",
        "! wrong name or password",
        "! wrong name or password",
        "* too many failed logins on this connection; goodbye",
    ]


async def test_after_six_failures_the_next_login_is_throttled_like_the_api(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    for _ in range(2):  # three refusals per connection
        client = await connect()
        await client.until("LOGIN")
        await client.speak("en_US")
        for _ in range(3):
            await client.send("LOGIN alice wrong")
        assert (await client.rest()).count("! wrong name or password") == 3
    client = await connect()
    await client.until("LOGIN")
    await client.speak("en_US")
    await client.send(f"LOGIN alice {PASSWORD}")  # even the right password waits
    assert await client.line() == "! too many failed logins; try again in 1 second"
    assert await services.hub.online("lobby") == []


async def test_no_login_within_the_login_timeout_closes_the_connection(
    start: Start,
) -> None:
    chat = await start(login_timeout=0.2)
    client = await open_client(chat)
    try:
        lines = await client.rest()
    finally:
        await client.close()
    assert lines == [GREETING_ZH, "! 0.2 秒内没有 LOGIN，再见"]


async def test_a_login_without_chat_use_is_refused_closed_and_says_nothing_in_the_room(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "bob")
    await add_user(services, "alice", permissions=())
    bob = await connect()
    await bob.log_in("bob")

    alice = await connect()
    await alice.until("LOGIN")
    await alice.send(f"LOGIN alice {PASSWORD}")
    await alice.send("hello?")  # nothing after the refusal is read

    assert await alice.rest() == [REFUSED_CHAT_ZH]
    await bob.send("marker")
    assert await bob.line() == "[lobby] bob: marker", "no join or message of alice before it"
    assert await services.hub.online("lobby") == ["bob"]
    async with services.sessions() as session:
        audited = (
            await session.execute(
                select(AuditEntry.action, AuditEntry.detail).where(AuditEntry.actor == "alice")
            )
        ).all()
    assert audited == [("login_denied", "tcp chat: needs chat.use")]


async def test_a_role_that_gains_chat_use_lets_its_holder_in_once_the_change_is_published(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice", permissions=())
    role_id = await grant(services, "alice", ORDERS_USE)
    refused = await connect()
    await refused.until("LOGIN")
    await refused.send(f"LOGIN alice {PASSWORD}")
    assert await refused.rest() == [REFUSED_CHAT_ZH]  # what alice's role set holds is cached

    async with services.sessions() as session, session.begin():
        root = await UserRepository(session).add(
            name="root", password_hash=await services.passwords.hash(PASSWORD), is_superuser=True
        )
        admin = Admin(session, Principal(root.id, root.name, True, frozenset()), client_ip=None)
        await admin.set_role_permissions(role_id, {ORDERS_USE, CHAT_USE})
    for event in admin.events:
        await services.invalidation.publish(event)

    alice = await connect()
    assert (await alice.log_in("alice"))[-1] == "* online in lobby: alice"


# --- chatting ---------------------------------------------------------------------------------


async def test_two_users_chat_in_the_lobby_and_see_each_other(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    await add_user(services, "bob")
    alice = await connect()
    await alice.log_in("alice")
    bob = await connect()
    bob_lines = await bob.log_in("bob")
    assert bob_lines[-1] == "* online in lobby: alice, bob"
    assert await alice.line() == "* bob joined lobby"

    await bob.send("hello alice")
    assert await alice.line() == "[lobby] bob: hello alice"
    assert await bob.line() == "[lobby] bob: hello alice"
    await alice.send("  hi bob, 你好  ")
    assert await bob.line() == "[lobby] alice: hi bob, 你好"
    assert await alice.line() == "[lobby] alice: hi bob, 你好"

    await bob.close()
    assert await alice.line() == "* bob left lobby"
    await eventually(lambda: _online_is(services, ["alice"]))


async def test_who_lists_the_users_online_in_the_current_room(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    await add_user(services, "bob")
    alice = await connect()
    await alice.log_in("alice")
    bob = await connect()
    await bob.log_in("bob")
    await bob.send("/who")
    assert await bob.line() == "* online in lobby: alice, bob"


async def test_join_moves_the_user_to_another_room(services: Services, connect: Connect) -> None:
    await add_user(services, "alice")
    await add_user(services, "bob")
    alice = await connect()
    await alice.log_in("alice")
    bob = await connect()
    await bob.log_in("bob")
    await alice.until("* bob joined lobby")

    await bob.send("/join 茶室")
    assert await bob.until("* online in 茶室:") == [
        "* 茶室: no messages yet",
        "* bob joined 茶室",
        "* online in 茶室: bob",
    ]
    assert await alice.line() == "* bob left lobby"
    await bob.send("anyone here?")
    assert await bob.line() == "[茶室] bob: anyone here?"
    await alice.send("/who")
    assert await alice.line() == "* online in lobby: alice"

    await bob.send("/join 茶室")
    assert await bob.line() == "* you are already in 茶室"
    for bad in ("/join", "/join two words", "/join " + "x" * 65):
        await bob.send(bad)
        line = await bob.line()
        assert line is not None
        assert line.startswith("! usage: /join ROOM"), bad
    await bob.send("/dance")
    assert await bob.line() == "! unknown command /dance; try /help"
    await bob.send("/help")
    line = await bob.line()
    assert line is not None
    assert line.startswith("* commands: /who")


async def test_quit_says_bye_closes_and_leaves_the_room(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    await add_user(services, "bob")
    alice = await connect()
    await alice.log_in("alice")
    bob = await connect()
    await bob.log_in("bob")
    await alice.until("* bob joined lobby")
    await bob.send("/quit")
    assert await bob.rest() == ["* bye"]
    assert await alice.line() == "* bob left lobby"
    assert await services.hub.online("lobby") == ["alice"]


async def test_history_on_join_shows_what_was_said_before(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    await services.hub.say("bob", "lobby", "first")
    await services.hub.say("carol", "lobby", "second\nline\x1b[2J")
    alice = await connect()
    lines = await alice.log_in("alice")
    start = lines.index("* lobby: the last 2 messages")
    assert lines[start + 1 : start + 3] == [
        "[lobby] bob: first",
        "[lobby] carol: second line [2J",  # control characters cannot reach a terminal
    ]


async def test_tcp_users_and_other_hub_members_share_a_room(
    services: Services, connect: Connect
) -> None:
    class WebSocketLike:
        """A hub member as the WebSocket adapter will be: it receives the JSON frames."""

        user = "wendy"

        def __init__(self) -> None:
            self.frames: list[str] = []

        def send(self, payload: str) -> None:
            self.frames.append(payload)

    wendy = WebSocketLike()
    await services.hub.join(wendy, "lobby")
    await add_user(services, "alice")
    alice = await connect()
    lines = await alice.log_in("alice")
    assert lines[-1] == "* online in lobby: alice, wendy"
    await alice.send("hi wendy")
    assert await alice.line() == "[lobby] alice: hi wendy"
    await services.hub.say("wendy", "lobby", "hi alice")
    assert await alice.line() == "[lobby] wendy: hi alice"
    assert any('"text":"hi wendy"' in frame for frame in wendy.frames)
    await services.hub.leave(wendy, "lobby")


# --- limits -----------------------------------------------------------------------------------


async def test_a_5_kib_line_is_refused_and_the_connection_keeps_working(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    await alice.send("x" * 5 * 1024)
    assert await alice.line() == f"! line too long (at most {LINE_LIMIT} bytes); ignored"
    await alice.send("y" * (LINE_LIMIT + 1))  # within the reader's limit, over the line's
    assert await alice.line() == f"! line too long (at most {LINE_LIMIT} bytes); ignored"
    await alice.send("still here")
    assert await alice.line() == "[lobby] alice: still here"
    longest = "茶" * (LINE_LIMIT // 3) + "z"  # exactly LINE_LIMIT bytes, then CRLF
    await alice.send(longest + "\r")
    assert await alice.line() == f"[lobby] alice: {longest}"


async def test_a_message_longer_than_the_websockets_limit_is_not_sent(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    await alice.send("a" * (MAX_TEXT_CHARS + 1))
    assert await alice.line() == f"! a message holds at most {MAX_TEXT_CHARS} characters; not sent"
    await alice.send("a" * MAX_TEXT_CHARS)
    assert await alice.line() == f"[lobby] alice: {'a' * MAX_TEXT_CHARS}"


async def test_lines_over_the_rate_limit_are_refused_and_a_flood_is_disconnected(
    services: Services, start: Start
) -> None:
    await add_user(services, "alice")
    chat = await start(rate_per_second=0.001, rate_burst=3)
    alice = await open_client(chat)
    try:
        await alice.log_in("alice")
        for number in range(3 + REFUSALS_BEFORE_CLOSE):
            await alice.send(f"message {number}")
        lines = await alice.rest()
    finally:
        await alice.close()
    refused = "! slow down: at most 0.001 lines a second (bursts of 3); ignored"
    assert lines == [
        "[lobby] alice: message 0",
        "[lobby] alice: message 1",
        "[lobby] alice: message 2",
        *[refused] * (REFUSALS_BEFORE_CLOSE - 1),
        "! too many lines too fast; goodbye",
    ]


async def test_invalid_utf8_is_answered_with_an_error_line(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice")
    client = await connect()
    await client.until("LOGIN")
    await client.send(b"LOGIN alice \xff\xfe")
    assert await client.line() == "! 这一行不是合法的 UTF-8，已忽略"
    await client.speak("en_US")
    await client.send(b"LOGIN alice \xff\xfe")
    assert await client.line() == "! line is not valid UTF-8; ignored"
    await client.send(f"LOGIN alice {PASSWORD}")
    await client.until("* online in lobby:")
    await client.send(b"caf\xc3")
    assert await client.line() == "! line is not valid UTF-8; ignored"
    await client.send("café")
    assert await client.line() == "[lobby] alice: café"


async def test_an_idle_client_is_disconnected_with_a_line(services: Services, start: Start) -> None:
    await add_user(services, "alice")
    chat = await start(idle_seconds=0.3)
    client = await open_client(chat)
    try:
        await client.log_in("alice")
        await client.send("")  # input, even empty, keeps the connection alive
        assert await client.rest() == ["* no input for 0.3 seconds; goodbye"]
    finally:
        await client.close()
    await eventually(lambda: _online_is(services, []))


async def test_a_client_that_stops_reading_is_disconnected_when_its_queue_fills(
    services: Services, start: Start
) -> None:
    await add_user(services, "slow")
    await add_user(services, "fast")
    chat = await start(queue_size=16)
    server = chat.server
    slow = await _client_with_small_receive_buffer(chat.port)
    fast = await open_client(chat)
    try:
        await slow.log_in("slow")
        await fast.log_in("fast")
        transport = slow.writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()  # the client stops reading; the kernel buffers fill
        received: list[str] = []

        async def read_fast() -> None:
            while (line := await fast.line()) is not None:
                received.append(line)
                if line.endswith("the end"):
                    return

        reading = asyncio.create_task(read_fast())
        text = "x" * 1000
        async with asyncio.timeout(TIMEOUT):
            sent = 0
            while server.slow_readers_dropped == 0:
                await services.hub.say("flood", "lobby", text)
                sent += 1
                await asyncio.sleep(0)  # let the writers run, as real traffic would
        await eventually(lambda: _online_is(services, ["fast"]))
        await services.hub.say("flood", "lobby", "the end")
        await asyncio.wait_for(reading, TIMEOUT)
        assert received.count(f"[lobby] flood: {text}") == sent  # the reader missed nothing
        assert received[-1] == "[lobby] flood: the end"
        assert "* slow left lobby" in received
        assert await services.hub.online("lobby") == ["fast"]

        async def one_connection_left() -> bool:  # after the slow one's session is revoked
            return server.connections == 1

        await eventually(one_connection_left)
    finally:
        await slow.close()
        await fast.close()


async def _client_with_small_receive_buffer(port: int) -> LineClient:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), TIMEOUT)
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    return LineClient(reader, writer)


# --- shutdown and counting --------------------------------------------------------------------


async def test_close_sends_every_client_the_goodbye_line(services: Services, start: Start) -> None:
    await add_user(services, "alice")
    chat = await start()
    server = chat.server
    alice = await open_client(chat)
    stranger = await open_client(chat)
    try:
        await alice.log_in("alice")
        await stranger.until("LOGIN")
        assert server.connections == 2
        await asyncio.wait_for(server.close(), TIMEOUT)
        assert (await alice.rest())[-1] == GOODBYE  # in each connection's language
        assert await stranger.rest() == [GOODBYE_ZH]
        assert server.connections == 0
        assert await services.hub.online("lobby") == []
        with pytest.raises(ConnectionRefusedError):
            await open_client(chat)
    finally:
        await alice.close()
        await stranger.close()


async def test_connections_are_counted_until_they_close(chat: Chat) -> None:
    assert chat.server.connections == 0
    client = await open_client(chat)
    await client.until("LOGIN")
    assert chat.server.connections == 1
    await client.close()

    async def closed() -> bool:
        return chat.server.connections == 0

    await eventually(closed)


# --- the seed's client ------------------------------------------------------------------------


def seed_style_client(port: int, password: str) -> str:
    """The seed's blocking ``socket`` client (§9.1): connect, send, receive."""
    client = socket.socket()
    client.settimeout(TIMEOUT)
    try:
        client.connect((HOST, port))
        client.send(f"LOGIN carol {password}\n".encode())
        client.send("您好，我是你的未来对象\n".encode())
        received = b""
        while "carol: 您好".encode() not in received:
            chunk = client.recv(4096)
            if not chunk:
                break
            received += chunk
        return received.decode("utf-8")
    finally:
        client.close()


async def test_the_seeds_blocking_socket_client_can_log_in_and_chat(
    services: Services, chat: Chat
) -> None:
    await add_user(services, "carol")
    received = await asyncio.to_thread(seed_style_client, chat.port, PASSWORD)
    assert "* carol，你好！" in received  # the seed's client never asked for English
    assert "[lobby] carol: 您好，我是你的未来对象\r\n" in received


# --- language ---------------------------------------------------------------------------------


async def test_an_account_that_chose_english_hears_chinese_before_login_and_english_after(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice", language="en_US")
    alice = await connect()

    assert await alice.line() == GREETING_ZH  # nobody is known yet: the default
    await alice.send("hello?")
    assert await alice.line() == "! 请先登录：LOGIN <name> <password>"
    await alice.send(f"LOGIN alice {PASSWORD}")
    assert await alice.until("* online in lobby:") == [
        "* hello alice; you are in lobby. Try /help",
        "* lobby: no messages yet",
        "* alice joined lobby",
        "* online in lobby: alice",
    ]
    await alice.send("/join")
    assert await alice.line() == "! usage: /join ROOM (1 to 64 letters, digits, '_', '.' or '-')"


async def test_the_accounts_language_wins_over_lang_sent_before_login(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice", language="zh_CN")
    alice = await connect()
    await alice.until("LOGIN")
    assert await alice.speak("en_US") == "* language set to English"
    await alice.send("hello?")
    assert await alice.line() == "! log in first: LOGIN <name> <password>"

    await alice.send(f"LOGIN alice {PASSWORD}")

    hello = (await alice.until("* lobby 在线："))[0]
    assert hello == "* alice，你好！你在 lobby。输入 /help 查看命令"


async def test_each_reader_gets_the_rooms_lines_in_their_language_and_lang_switches_one(
    services: Services, connect: Connect
) -> None:
    await add_user(services, "alice", language="en_US")
    await add_user(services, "bob")
    alice = await connect()
    await alice.log_in("alice", language=None)
    bob = await connect()
    assert (await bob.log_in("bob", language=None))[-1] == "* lobby 在线：alice, bob"
    assert await alice.line() == "* bob joined lobby"

    await bob.send("/lang en_US")
    assert await bob.line() == "* language set to English"
    await bob.send("/who")
    assert await bob.line() == "* online in lobby: alice, bob"
    await alice.send("/lang zh")
    assert await alice.line() == "* 语言已设为中文"
    await alice.send("/lang klingon")
    assert await alice.line() == "! 用法：/lang zh_CN|en_US"
    await alice.send("/help")
    assert await alice.line() == (
        "* 命令：/who（谁在这里）、/join ROOM（换房间）、/rooms（你可以进入的房间）、"
        "/support（联系客服）、/lang zh_CN|en_US（语言）、/quit（退出）；其他每一行都作为消息发出"
    )
    await bob.send("/quit")
    assert await bob.rest() == ["* bye"]
    assert await alice.line() == "* bob 离开 lobby"


# --- rendering --------------------------------------------------------------------------------


def test_frames_without_a_line_for_tcp_clients_render_as_nothing() -> None:
    assert render("not json") == ()
    assert render("[1, 2]") == ()
    assert render('{"type": "typing", "room": "lobby"}') == ()
    assert render('{"type": "error", "room": "lobby", "text": "no\\nway"}') == ("! no way",)


def test_frames_render_in_the_readers_language_and_data_stays_as_it_is() -> None:
    one = '{"type": "history", "room": "茶室", "messages": [{"user": "ann", "text": "hi"}]}'
    two = (
        '{"type": "history", "room": "lobby", "messages": '
        '[{"user": "ann", "text": "hi"}, {"user": "bob", "text": "你好"}]}'
    )
    leave = '{"type": "leave", "room": "lobby", "user": "joined lobby"}'

    assert render(one, "en_US") == ("* 茶室: the last message", "[茶室] ann: hi")
    assert render(one, "zh_CN") == ("* 茶室：最近 1 条消息", "[茶室] ann: hi")
    assert render(two, "en_US")[0] == "* lobby: the last 2 messages"
    assert render(two, "zh_CN")[0] == "* lobby：最近 2 条消息"
    assert render(two) == render(two, "zh_CN"), "Chinese is the default"
    assert render(leave, "en_US") == ("* joined lobby left lobby",)
    assert render(leave, "zh_CN") == ("* joined lobby 离开 lobby",)


async def _online_is(services: Services, users: list[str]) -> bool:
    return await services.hub.online("lobby") == users


# --- every login is a session -----------------------------------------------------------------

NEW_PASSWORD = "tr0ub4dor and more"


async def api_login(client: Client, name: str, password: str = PASSWORD) -> dict[str, str]:
    """Log ``name`` in through the JSON API; the bearer header of that (other) session."""
    response = await client.post("/user/login", json_body={"name": name, "pwd": password})
    assert response.status == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def tcp_sessions(client: Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The caller's live sessions of device ``tcp``."""
    response = await client.get("/user/sessions", headers=headers)
    assert response.status == 200, response.text
    return [item for item in response.json()["items"] if item["device"] == "tcp"]


async def add_root(services: Services, client: Client) -> dict[str, str]:
    """A superuser ``root``, logged in through the API."""
    async with services.sessions() as session, session.begin():
        await UserRepository(session).add(
            name="root", password_hash=await services.passwords.hash(PASSWORD), is_superuser=True
        )
    return await api_login(client, "root")


async def user_id(services: Services, name: str) -> int:
    async with services.sessions() as session:
        user = await UserRepository(session).get_by_name(name)
    assert user is not None
    return user.id


async def test_a_tcp_login_is_a_session_listed_with_device_tcp(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    sessions = await tcp_sessions(client, await api_login(client, "alice"))
    assert len(sessions) == 1 and sessions[0]["current"] is False
    async with services.sessions() as session:
        query = select(AuditEntry.detail).where(AuditEntry.action == "login")
        details = (await session.scalars(query)).all()
    assert details[0] == "tcp chat", details


async def test_revoking_the_tcp_session_by_id_ends_the_connection_with_a_goodbye(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    headers = await api_login(client, "alice")
    [session] = await tcp_sessions(client, headers)
    revoked = await client.request("DELETE", f"/user/sessions/{session['id']}", headers=headers)
    assert revoked.status == 200, revoked.text
    assert (await alice.rest())[-1] == SESSION_ENDED
    await eventually(lambda: _online_is(services, []))


async def test_a_password_change_ends_the_tcp_connection(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    headers = await api_login(client, "alice")
    changed = await client.request(
        "PUT",
        "/user/password",
        json_body={"old_pwd": PASSWORD, "new_pwd": NEW_PASSWORD},
        headers=headers,
    )
    assert changed.status == 200, changed.text
    assert (await alice.rest())[-1] == SESSION_ENDED
    assert await tcp_sessions(client, headers) == []


async def test_closing_the_account_ends_the_tcp_connection(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    headers = await api_login(client, "alice")
    closed = await client.request(
        "DELETE", "/user/account", json_body={"pwd": PASSWORD}, headers=headers
    )
    assert closed.status == 200, closed.text
    assert (await alice.rest())[-1] == SESSION_ENDED


async def test_an_administrator_deactivating_the_user_ends_the_tcp_connection(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    root = await add_root(services, client)
    alice = await connect()
    await alice.log_in("alice")
    alice_id = await user_id(services, "alice")
    response = await client.request(
        "PATCH", f"/api/users/{alice_id}", json_body={"is_active": False}, headers=root
    )
    assert response.status == 200, response.text
    assert (await alice.rest())[-1] == SESSION_ENDED


async def test_an_administrator_revoking_the_sessions_counts_and_ends_the_tcp_connection(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    root = await add_root(services, client)
    alice = await connect()
    await alice.log_in("alice")
    alice_id = await user_id(services, "alice")
    response = await client.request("DELETE", f"/api/users/{alice_id}/sessions", headers=root)
    assert response.status == 200, response.text
    assert response.json()["revoked"] == 1
    assert (await alice.rest())[-1] == SESSION_ENDED


async def test_only_the_revoked_sessions_connection_ends(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    first, second = await connect(), await connect()
    await first.log_in("alice")
    await second.log_in("alice")
    headers = await api_login(client, "alice")
    sessions = await tcp_sessions(client, headers)
    assert len(sessions) == 2
    revoked = await client.request("DELETE", f"/user/sessions/{sessions[0]['id']}", headers=headers)
    assert revoked.status == 200
    assert (await first.rest())[-1] == SESSION_ENDED
    await second.send("still here")
    await second.until("[lobby] alice: still here")


async def test_a_tcp_session_ends_when_the_client_quits(
    services: Services, client: Client, connect: Connect
) -> None:
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    headers = await api_login(client, "alice")
    assert len(await tcp_sessions(client, headers)) == 1
    await alice.send("/quit")
    assert (await alice.rest())[-1] == "* bye"

    async def no_tcp_session() -> bool:
        return await tcp_sessions(client, headers) == []

    await eventually(no_tcp_session)
    async with services.sessions() as session:
        logouts = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "logout"))
        ).all()
    assert [entry.detail for entry in logouts] == ["tcp chat"]


async def test_a_session_revoked_without_an_event_ends_at_the_next_line(
    services: Services, connect: Connect
) -> None:
    """The backstop: an invalidation lost on the way (Redis away) still ends the connection as
    soon as its user says something, once the login cache no longer vouches for the token."""
    await add_user(services, "alice")
    alice = await connect()
    await alice.log_in("alice")
    await alice.send("before")
    await alice.until("[lobby] alice: before")
    async with services.sessions() as session, session.begin():
        [token] = (await session.scalars(select(AuthToken))).all()
        await TokenRepository(session).revoke(token.id)
    services.login_cache.on_event(Event("token", token.token_hash))  # the cache entry aged out
    await alice.send("after")
    assert await alice.rest() == [SESSION_ENDED]

"""Private support conversations (客服在线), seen first from the attacker's side: a second customer
cannot enter, resume, read or list the first customer's thread over the WebSocket (``?room=``,
``last_id``), the TCP chat (``/join``, ``/rooms``), the pages or the JSON API, and nobody but an
agent enters the queue; then what the customer and the agents do: the thread resumed, answers
with the staff badge, the live queue, closing, whether an agent is online.

The app is served in-process on SQLite (the concurrency tests in ``tests/server/test_support.py``
run on MariaDB too). Every wait is bounded; "nothing arrived" is proven with a marker the same
connection receives afterwards, never with a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import IOStream
from tornado.websocket import WebSocketClientConnection, websocket_connect

from repositories.chat import ChatRepository
from repositories.users import UserRepository
from server.invalidation import Event
from server.permissions import CHAT_USE, SUPPORT_ANSWER
from server.principal import Principal
from server.realtime.hub import encode
from server.realtime.redis_bus import RedisBus
from server.realtime.rooms import QUEUE_ROOM, thread_room
from server.realtime.tcp import TcpChatServer, render
from server.services import Services, open_services
from tests.conftest import Client, make_settings
from tests.grants import grant_in_session
from tests.server.handlers.test_user import bearer, login
from tests.server.realtime.conftest import app_prefix, delete_keys, form_login
from tests.server.security.conftest import ScratchRedis

WAIT = 10.0
PASSWORD = "correct horse battery"
SUBPROTOCOL = "mservices.chat.v1"
"""The JSON frames' subprotocol (a client asking for none gets the seed's plain text)."""
HOST = "127.0.0.1"

Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Person:
    """A user of the tests: their name, browser session cookie and API bearer token."""

    name: str
    cookie: str
    token: str


async def add_person(client: Client, services: Services, name: str, *permissions: str) -> Person:
    """Create ``name`` holding ``permissions`` and log in twice: the ``/login`` form (the
    socket's cookie) and ``POST /user/login`` (a bearer token)."""
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).add(
            name=name, password_hash=await services.passwords.hash(PASSWORD)
        )
        await grant_in_session(session, user.id, *permissions)
    return Person(name, await form_login(client, name, PASSWORD), await login(client, name))


@dataclass(frozen=True, slots=True)
class People:
    """Two customers and two agents."""

    carol: Person
    dave: Person
    ann: Person
    bob: Person


@pytest.fixture
async def people(client: Client, services: Services) -> People:
    """Customers carol and dave (``chat.use``), agents ann and bob (also ``support.answer``)."""
    return People(
        carol=await add_person(client, services, "carol", CHAT_USE),
        dave=await add_person(client, services, "dave", CHAT_USE),
        ann=await add_person(client, services, "ann", CHAT_USE, SUPPORT_ANSWER),
        bob=await add_person(client, services, "bob", CHAT_USE, SUPPORT_ANSWER),
    )


class Socket:
    """A client of ``/message`` speaking the JSON subprotocol; every wait bounded."""

    def __init__(self, connection: WebSocketClientConnection) -> None:
        self.connection = connection

    async def frame(self) -> Frame:
        """The next frame, parsed (fails when the socket closes instead)."""
        message = await asyncio.wait_for(self.connection.read_message(), WAIT)
        assert message is not None, f"closed with {self.connection.close_code}"
        assert isinstance(message, str)
        frame: Frame = json.loads(message)
        return frame

    async def until(self, accept: Callable[[Frame], bool]) -> tuple[Frame, list[Frame]]:
        """Read up to the first frame ``accept`` takes; returns it and the frames before it."""
        before: list[Frame] = []
        while not accept(frame := await self.frame()):
            before.append(frame)
        return frame, before

    async def joined(self) -> Frame:
        """Read the frames of joining up to ``presence``; returns the history frame."""
        history = await self.frame()
        assert history["type"] == "history", history
        await self.until(lambda frame: frame["type"] == "presence")
        return history

    async def say(self, text: str) -> None:
        """Send a message frame."""
        await self.connection.write_message(json.dumps({"type": "message", "text": text}))

    async def heard(self, text: str) -> tuple[Frame, list[Frame]]:
        """Read up to the message ``text``; returns it and the frames before it."""
        return await self.until(lambda frame: frame["type"] == "message" and frame["text"] == text)

    def close(self) -> None:
        """Close from the client side."""
        self.connection.close()


Connect = Callable[..., Awaitable[Socket]]


@pytest.fixture
async def connect(client: Client, services: Services) -> AsyncIterator[Connect]:
    """Open ``/message?room=...&last_id=...`` as the holder of a cookie; closed afterwards."""
    opened: list[tuple[WebSocketClientConnection, IOStream]] = []

    async def open_socket(cookie: str, room: str, *, last_id: int | None = None) -> Socket:
        query = {"room": room, **({"last_id": str(last_id)} if last_id is not None else {})}
        url = "ws" + client.base_url.removeprefix("http") + "/message?" + urlencode(query)
        request = HTTPRequest(
            url, headers={"Origin": client.base_url, "Cookie": cookie}, request_timeout=WAIT
        )
        connection = await asyncio.wait_for(
            websocket_connect(request, subprotocols=[SUBPROTOCOL]), WAIT
        )
        assert connection.protocol is not None and connection.protocol.stream is not None
        opened.append((connection, connection.protocol.stream))
        return Socket(connection)

    try:
        yield open_socket
    finally:
        for connection, _ in opened:
            connection.close()
        for connection, stream in opened:  # read what is queued, to see the server's close
            deadline = asyncio.get_running_loop().time() + WAIT
            while not stream.closed():
                assert asyncio.get_running_loop().time() < deadline, "a socket never closed"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(connection.read_message(), 0.05)
        await settled(services)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def settled(services: Services) -> None:
    """Wait until background work (leaves, refreshes) and the history writer are done."""
    await eventually(
        lambda: len(services.background) == 0 and not services.hub.history._pending,
        "background work to finish",
    )


async def refused_status(connect: Connect, cookie: str, room: str, **kwargs: Any) -> int:
    """The status a handshake into ``room`` is refused with (fails if it is accepted)."""
    with pytest.raises(HTTPClientError) as refused:
        await connect(cookie, room, **kwargs)
    return refused.value.code


async def open_support(client: Client, person: Person) -> int:
    """``GET /robbit`` as ``person`` (a customer): the id of their thread the page opened."""
    response = await client.get("/robbit", headers={"Cookie": person.cookie})
    assert response.status == 200, response.text
    match = re.search(r'data-room="support-(\d+)"', response.text)
    assert match is not None, response.text
    return int(match.group(1))


@dataclass
class Conversation:
    """carol's thread with one message of hers, and her socket in it."""

    thread_id: int
    room: str
    carol: Socket
    first_id: int


@pytest.fixture
async def conversation(client: Client, people: People, connect: Connect) -> Conversation:
    """carol opens support and says she needs help with order 7."""
    thread_id = await open_support(client, people.carol)
    room = thread_room(thread_id)
    carol = await connect(people.carol.cookie, room)
    await carol.joined()
    await carol.say("my order 7 never came")
    message, _ = await carol.heard("my order 7 never came")
    return Conversation(thread_id, room, carol, int(message["id"]))


# -- the attacker: another customer ------------------------------------------------------------


async def test_another_customer_cannot_join_the_thread_room_over_the_websocket(
    people: People, connect: Connect, conversation: Conversation
) -> None:
    dave = people.dave.cookie
    statuses = [
        await refused_status(connect, dave, conversation.room),
        await refused_status(connect, dave, conversation.room, last_id=0),
        await refused_status(connect, dave, conversation.room, last_id=conversation.first_id - 1),
    ]
    assert statuses == [403, 403, 403]


async def test_a_thread_that_does_not_exist_is_refused_like_someone_elses(
    people: People, connect: Connect, conversation: Conversation
) -> None:
    dave = people.dave.cookie
    for room in (
        thread_room(conversation.thread_id + 1000),
        f"support-0{conversation.thread_id}",
        f"Support-{conversation.thread_id}",
        f"SUPPORT-{conversation.thread_id}",
        "support-",
        "support-x",
        f"support-{2**63}",
        QUEUE_ROOM,
        "Support-Queue",
    ):
        assert await refused_status(connect, dave, room) == 403, room


async def test_nothing_said_in_the_thread_reaches_another_customer_anywhere(
    client: Client, people: People, connect: Connect, conversation: Conversation
) -> None:
    dave = await connect(people.dave.cookie, "lobby")
    await dave.joined()
    ann = await connect(people.ann.cookie, conversation.room)
    await ann.joined()

    await ann.say("please send your address")
    await conversation.carol.heard("please send your address")
    await dave.say("marker")
    _, before = await dave.heard("marker")

    text = json.dumps(before, ensure_ascii=False)
    assert "order 7" not in text and "address" not in text, before


async def test_another_customer_cannot_read_the_thread_through_the_api_or_the_pages(
    client: Client, people: People, conversation: Conversation
) -> None:
    as_dave = bearer(people.dave.token)
    thread = f"/api/support/threads/{conversation.thread_id}"

    assert (await client.get(thread, headers=as_dave)).status == 404
    assert (await client.get(thread + "1000", headers=as_dave)).status == 404
    listed = await client.get("/api/support/threads", headers=as_dave)
    page = await client.get(
        f"/support/{conversation.thread_id}", headers={"Cookie": people.dave.cookie}
    )
    queue = await client.get("/support", headers={"Cookie": people.dave.cookie})
    closing = await client.post(thread + "/close", headers=as_dave)

    assert listed.status == 200 and listed.json()["items"] == [], listed.text
    assert page.status == 404 and "order 7" not in page.text
    assert queue.status == 403 and "order 7" not in queue.text
    assert closing.status == 403


async def test_another_customer_opening_support_gets_a_thread_of_their_own(
    client: Client, people: People, connect: Connect, conversation: Conversation
) -> None:
    dave_thread = await open_support(client, people.dave)
    assert dave_thread != conversation.thread_id
    dave = await connect(people.dave.cookie, thread_room(dave_thread))
    history = await dave.joined()
    assert history["messages"] == []
    assert await open_support(client, people.dave) == dave_thread, "resumed, not a new one"
    assert await open_support(client, people.carol) == conversation.thread_id


async def test_over_tcp_another_customer_can_neither_join_nor_list_the_thread(
    services: Services, people: People, conversation: Conversation
) -> None:
    async with tcp_client(services, "dave") as dave:
        await dave.send(f"/join {conversation.room}")
        refused = await dave.line()
        await dave.send("/rooms")
        rooms = await dave.until("lobby")
        await dave.send("/who")
        where = await dave.until("online in")

    assert refused == f"! you may not enter the room {conversation.room}"
    assert not any(conversation.room in line for line in rooms), rooms
    assert where[-1] == "* online in lobby: dave", "still in the lobby"


async def test_a_customer_cannot_speak_in_or_read_the_queue_over_tcp(
    services: Services, people: People, conversation: Conversation
) -> None:
    async with tcp_client(services, "carol") as carol:
        await carol.send(f"/join {QUEUE_ROOM}")
        assert await carol.line() == f"! you may not enter the room {QUEUE_ROOM}"


async def test_an_agent_who_loses_support_answer_cannot_enter_again(
    services: Services, people: People, connect: Connect, conversation: Conversation
) -> None:
    ann = await connect(people.ann.cookie, conversation.room)
    await ann.joined()
    ann.close()
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).get_by_name("ann")
        assert user is not None
        await UserRepository(session).set_roles(user.id, set())
        await grant_in_session(session, user.id, CHAT_USE)
    await services.invalidation.publish(Event("user", str(user.id)))
    await services.invalidation.publish(Event("roles"))

    assert await refused_status(connect, people.ann.cookie, conversation.room) == 403
    assert await refused_status(connect, people.ann.cookie, QUEUE_ROOM) == 403


# -- the customer and the agents --------------------------------------------------------------


async def test_an_agent_enters_any_thread_reads_it_and_answers_with_the_staff_badge(
    services: Services, people: People, connect: Connect, conversation: Conversation
) -> None:
    ann = await connect(people.ann.cookie, conversation.room)
    history = await ann.joined()
    assert [(m["user"], m["text"]) for m in history["messages"]] == [
        ("carol", "my order 7 never came")
    ]
    assert "staff" not in history["messages"][0]

    await ann.say("sorry! it ships today")
    answer, _ = await conversation.carol.heard("sorry! it ships today")
    assert answer["user"] == "ann" and answer["staff"] is True
    await conversation.carol.say("thanks")
    mine, _ = await ann.heard("thanks")
    assert "staff" not in mine

    async with services.sessions() as session:
        stored = await ChatRepository(session).recent(conversation.room, limit=10)
    assert [(m.user, m.staff) for m in stored] == [
        ("carol", False),
        ("ann", True),
        ("carol", False),
    ]


async def test_the_customer_resumes_the_thread_with_last_id_and_gets_what_was_missed(
    people: People, connect: Connect, conversation: Conversation
) -> None:
    conversation.carol.close()
    ann = await connect(people.ann.cookie, conversation.room)
    await ann.joined()
    await ann.say("are you there?")
    await ann.heard("are you there?")

    carol = await connect(people.carol.cookie, conversation.room, last_id=conversation.first_id)
    history = await carol.joined()

    assert [(m["user"], m["text"], m.get("staff")) for m in history["messages"]] == [
        ("ann", "are you there?", True)
    ]


async def test_the_queue_is_live_for_agents_and_the_thread_frame_says_where_it_stands(
    client: Client, people: People, connect: Connect
) -> None:
    queue = await connect(people.bob.cookie, QUEUE_ROOM)
    await queue.joined()
    thread_id = await open_support(client, people.carol)
    room = thread_room(thread_id)
    carol = await connect(people.carol.cookie, room)
    await carol.joined()

    await carol.say("hello?")
    new, _ = await queue.until(lambda frame: frame["type"] == "thread")
    ann = await connect(people.ann.cookie, room)
    await ann.joined()
    await ann.say("hello carol")
    answered, _ = await queue.until(lambda frame: frame["type"] == "thread")
    await carol.say("my parcel")
    waiting, _ = await queue.until(lambda frame: frame["type"] == "thread")

    assert new["room"] == QUEUE_ROOM
    assert new["thread"]["id"] == thread_id and new["thread"]["customer"] == "carol"
    assert [f["thread"]["status"] for f in (new, answered, waiting)] == [
        "new",
        "answered",
        "waiting",
    ]
    assert [f["thread"]["version"] for f in (new, answered, waiting)] == [1, 2, 3]
    assert waiting["thread"]["last_message"]["text"] == "my parcel"
    listed = await client.get("/api/support/threads", headers=bearer(people.bob.token))
    assert [(t["id"], t["status"]) for t in listed.json()["items"]] == [(thread_id, "waiting")]


async def test_closing_tells_everyone_and_the_thread_refuses_what_comes_after(
    client: Client, people: People, connect: Connect, conversation: Conversation
) -> None:
    queue = await connect(people.bob.cookie, QUEUE_ROOM)
    await queue.joined()
    path = f"/api/support/threads/{conversation.thread_id}/close"

    closed = await client.post(path, headers=bearer(people.bob.token))
    again = await client.post(path, headers=bearer(people.ann.token))
    in_room, _ = await conversation.carol.until(
        lambda frame: frame["type"] == "thread" and frame["thread"]["status"] == "closed"
    )
    in_queue, _ = await queue.until(lambda frame: frame["type"] == "thread")
    await conversation.carol.say("one more thing")
    refusal, _ = await conversation.carol.until(lambda frame: frame["type"] == "error")

    assert closed.status == 200 and closed.json()["thread"]["status"] == "closed"
    assert again.status == 409 and again.json()["code"] == "thread_closed"
    assert in_queue["thread"]["status"] == "closed"
    assert in_room["thread"]["version"] == in_queue["thread"]["version"] == 2
    assert refusal["code"] == "closed"
    assert await open_support(client, people.carol) != conversation.thread_id, "a new one"


async def test_the_customer_sees_whether_an_agent_is_online(
    client: Client, people: People, connect: Connect, services: Services
) -> None:
    room = thread_room(await open_support(client, people.carol))
    carol = await connect(people.carol.cookie, room)
    await carol.joined()
    offline, _ = await carol.until(lambda frame: frame["type"] == "agents")

    ann = await connect(people.ann.cookie, QUEUE_ROOM)
    await ann.joined()
    online, _ = await carol.until(lambda frame: frame["type"] == "agents")
    ann.close()
    gone, _ = await carol.until(lambda frame: frame["type"] == "agents")

    assert [offline["online"], online["online"], gone["online"]] == [False, True, False]
    assert online["room"] == room


async def test_an_agent_answers_over_tcp_and_the_customer_sees_the_badge(
    services: Services, people: People, conversation: Conversation
) -> None:
    async with tcp_client(services, "ann") as ann:
        await ann.send("/rooms")
        rooms = await ann.until(conversation.room)
        await ann.send(f"/join {conversation.room}")
        joined = await ann.until("online in")
        await ann.send("we are on it")
        answer, _ = await conversation.carol.heard("we are on it")

    assert any(QUEUE_ROOM in line for line in rooms), rooms
    assert any("carol" in line and "new" in line for line in rooms if conversation.room in line)
    assert "[support-" in "".join(joined) and "carol: my order 7 never came" in "".join(joined)
    assert answer["staff"] is True


async def test_a_tcp_customer_opens_their_own_thread_with_support(
    client: Client, services: Services, people: People
) -> None:
    async with tcp_client(services, "dave") as dave:
        await dave.send("/support")
        entered = await dave.until("online in")
    thread_id = await open_support(client, people.dave)
    assert any(thread_room(thread_id) in line for line in entered), entered


# -- a TCP client ------------------------------------------------------------------------------


class LineClient:
    """A TCP chat client: sends lines, reads the server's lines with bounded waits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, line: str) -> None:
        """Send one line."""
        self.writer.write(line.encode("utf-8") + b"\n")
        await self.writer.drain()

    async def line(self) -> str:
        """The next line without its CRLF (fails at the end of the stream)."""
        raw = await asyncio.wait_for(self.reader.readline(), WAIT)
        assert raw, "the server closed the connection"
        return raw.decode("utf-8").removesuffix("\r\n")

    async def until(self, wanted: str) -> list[str]:
        """Lines up to and including the first that contains ``wanted``."""
        seen = [await self.line()]
        while wanted not in seen[-1]:
            seen.append(await self.line())
        return seen


@contextlib.asynccontextmanager
async def tcp_client(services: Services, name: str) -> AsyncIterator[LineClient]:
    """A TCP chat server and ``name`` logged in to it (in English), in the lobby."""
    server = TcpChatServer(services)
    port = await server.start(HOST, 0)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), WAIT)
    client = LineClient(reader, writer)
    try:
        await client.until("LOGIN")
        await client.send("LANG en_US")
        await client.line()
        await client.send(f"LOGIN {name} {PASSWORD}")
        await client.until("online in lobby")
        yield client
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await asyncio.wait_for(server.close(), WAIT)


# -- two processes over Redis ------------------------------------------------------------------


class Recorder:
    """A hub member that keeps every frame it is sent."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.frames: list[Frame] = []

    def send(self, payload: str) -> None:
        """Keep the frame."""
        self.frames.append(json.loads(payload))

    def kinds(self, kind: str) -> list[Frame]:
        """The frames of type ``kind`` received so far."""
        return [frame for frame in self.frames if frame["type"] == kind]


@pytest.mark.redis
async def test_the_queue_and_the_agents_presence_are_live_in_every_process(
    tmp_path: Path, sqlite_url: str, redis_scratch: ScratchRedis
) -> None:
    prefix = app_prefix(redis_scratch)
    async with contextlib.AsyncExitStack() as closing:
        closing.push_async_callback(delete_keys, redis_scratch, prefix)
        a, b = [
            await open_services(
                make_settings(
                    tmp_path / label, sqlite_url, redis_url=redis_scratch.url, redis_prefix=prefix
                )
            )
            for label in ("a", "b")
        ]
        closing.push_async_callback(a.close)
        closing.push_async_callback(b.close)
        for services in (a, b):
            assert isinstance(services.hub.bus, RedisBus)
            await asyncio.wait_for(services.hub.bus.subscribed.wait(), WAIT)
        carol = await principal(a, "carol", CHAT_USE)
        ann = await principal(a, "ann", CHAT_USE, SUPPORT_ANSWER)
        thread = await a.support.open_thread(carol)
        as_carol = await a.rooms.admit(carol, thread.room)
        as_ann = await b.rooms.admit(ann, thread.room)
        assert as_carol is not None and as_ann is not None

        customer, queue, agent = Recorder("carol"), Recorder("ann"), Recorder("ann")
        await a.hub.join(customer, thread.room)  # carol's page, on process a
        await a.rooms.welcome(customer, as_carol)
        await until(lambda: online(customer) == [False])
        await b.hub.join(queue, QUEUE_ROOM)  # ann's queue, on process b
        await until(lambda: online(customer) == [False, True])

        await a.rooms.say(as_carol, "carol", "hello from a")
        await until(lambda: len(queue.kinds("thread")) == 1)
        await b.hub.join(agent, thread.room)
        await b.rooms.say(as_ann, "ann", "hello from b")
        await until(lambda: [f["text"] for f in customer.kinds("message")][-1:] == ["hello from b"])
        await until(lambda: len(queue.kinds("thread")) == 2)
        await b.hub.leave(queue, QUEUE_ROOM)
        await until(lambda: online(customer) == [False, True, False])

    assert [f["thread"]["status"] for f in queue.kinds("thread")] == ["new", "answered"]
    assert customer.kinds("message")[-1]["staff"] is True
    assert queue.kinds("message") == [], "the queue gets the thread, never the messages"


async def principal(services: Services, name: str, *permissions: str) -> Principal:
    """Create ``name`` holding ``permissions`` (no password); their principal."""
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).add(name=name, password_hash="x")
        role_id = await grant_in_session(session, user.id, *permissions)
    return Principal(user.id, name, False, frozenset({role_id}))


def online(member: Recorder) -> list[bool]:
    """What the ``agents`` frames ``member`` received said, in order."""
    return [frame["online"] for frame in member.kinds("agents")]


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition`` holds."""
    await eventually(condition, "the frames to arrive")


def test_tcp_lines_show_the_staff_badge_the_thread_and_whether_an_agent_is_online() -> None:
    answer = encode("message", "support-7", user="ann", text="hi", ts=0.0, id=1, staff=True)
    thread = encode(
        "thread",
        QUEUE_ROOM,
        thread={
            "room": "support-7",
            "customer": "carol\x1b[2J",
            "status": "waiting",
            "last_message": {"user": "carol", "text": "where\nis it", "staff": False},
        },
    )

    assert render(answer, "en_US") == ("[support-7] ann (staff): hi",)
    assert render(answer, "zh_CN") == ("[support-7] ann（客服）: hi",)
    assert render(thread, "en_US") == (
        "* support-7 (carol [2J): waiting for a reply; last: carol: where is it",
    )
    assert render(encode("agents", "support-7", online=True), "en_US") == (
        "* a support agent is online",
    )
    assert render(encode("agents", "support-7", online=False), "zh_CN") == (
        "* 现在没有客服在线；请留言，我们会尽快回复",
    )

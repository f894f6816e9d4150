"""The hub without any transport: members are fakes that collect payloads, the bus and presence
are the single-process ones, and history is a real database (SQLite, and MariaDB when
configured)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.chat import ChatRepository, StoredMessage
from repositories.models import utcnow
from server.realtime.bus import LocalBus
from server.realtime.history import ChatHistory
from server.realtime.hub import HISTORY_ON_JOIN, RESUME_LIMIT, Hub, encode
from server.realtime.presence import LocalPresence

ROOM = "lobby"


@dataclass(eq=False)
class FakeMember:
    """A hub member that keeps every payload it is sent."""

    user: str
    payloads: list[str] = field(default_factory=list)

    def send(self, payload: str) -> None:
        """Keep ``payload``."""
        self.payloads.append(payload)

    def frames(self) -> list[dict[str, Any]]:
        """The payloads, parsed."""
        return [json.loads(payload) for payload in self.payloads]

    def kinds(self) -> list[str]:
        """The type of every frame received."""
        return [frame["type"] for frame in self.frames()]

    def take(self) -> list[dict[str, Any]]:
        """The frames received so far, forgetting them."""
        frames = self.frames()
        self.payloads.clear()
        return frames


@pytest.fixture
async def history(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[ChatHistory]:
    """History on a fresh database, without the background writer (tests flush when they
    mean to)."""
    chat_history = ChatHistory(sessions)
    try:
        yield chat_history
    finally:
        await chat_history.close()


@pytest.fixture
def hub(history: ChatHistory) -> Hub:
    """A single-process hub."""
    return Hub(LocalBus(), LocalPresence(), history)


async def test_joining_sends_history_then_presence_and_announces_the_first_connection(
    hub: Hub,
) -> None:
    bob = FakeMember("bob")
    await hub.join(bob, ROOM)
    bob.take()
    alice = FakeMember("alice")

    await hub.join(alice, ROOM)

    history, join, presence = alice.frames()
    assert history == {"type": "history", "room": ROOM, "messages": [], "recovered": True}
    assert (join["type"], join["user"]) == ("join", "alice")
    assert presence == {"type": "presence", "room": ROOM, "users": ["alice", "bob"]}
    assert bob.kinds() == ["join"]


async def test_a_users_second_connection_is_not_announced_and_only_the_last_leave_is(
    hub: Hub,
) -> None:
    bob = FakeMember("bob")
    first, second = FakeMember("alice"), FakeMember("alice")
    await hub.join(bob, ROOM)
    await hub.join(first, ROOM)
    bob.take()

    await hub.join(second, ROOM)
    assert second.kinds() == ["history", "presence"]
    assert bob.take() == []

    await hub.leave(first, ROOM)
    assert bob.take() == []
    assert await hub.online(ROOM) == ["alice", "bob"]

    await hub.leave(second, ROOM)
    [left] = bob.take()
    assert (left["type"], left["user"]) == ("leave", "alice")
    assert await hub.online(ROOM) == ["bob"]


async def test_leaving_twice_or_a_room_never_joined_changes_nothing(hub: Hub) -> None:
    alice, bob = FakeMember("alice"), FakeMember("bob")
    await hub.join(alice, ROOM)
    await hub.join(bob, ROOM)
    await hub.leave(alice, ROOM)
    bob.take()

    await hub.leave(alice, ROOM)
    await hub.leave(bob, "elsewhere")

    assert bob.take() == []
    assert await hub.online(ROOM) == ["bob"]


async def test_a_message_is_encoded_once_and_the_same_payload_reaches_every_member(
    hub: Hub,
) -> None:
    members = [FakeMember("alice"), FakeMember("bob"), FakeMember("carol")]
    outsider = FakeMember("dave")
    for member in members:
        await hub.join(member, ROOM)
    await hub.join(outsider, "elsewhere")
    for member in [*members, outsider]:
        member.take()

    message_id = await hub.say("alice", ROOM, "<b>hi</b>")

    payloads = [member.payloads[-1] for member in members]
    assert all(payload is payloads[0] for payload in payloads)
    frame = json.loads(payloads[0])
    assert frame["type"] == "message" and frame["id"] == message_id
    assert (frame["room"], frame["user"], frame["text"]) == (ROOM, "alice", "<b>hi</b>")
    assert outsider.payloads == []


async def test_join_sends_the_last_messages_stored_and_still_queued(
    hub: Hub, history: ChatHistory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for number in range(HISTORY_ON_JOIN):
        await hub.say("bob", ROOM, f"stored {number}")
    await hub.say("bob", "elsewhere", "not here")
    await history.flush()
    for number in range(5):
        await hub.say("bob", ROOM, f"queued {number}")
    alice = FakeMember("alice")

    await hub.join(alice, ROOM)

    texts = [message["text"] for message in alice.frames()[0]["messages"]]
    expected = [f"stored {n}" for n in range(5, HISTORY_ON_JOIN)] + [
        f"queued {n}" for n in range(5)
    ]
    assert texts == expected
    async with sessions() as session:
        stored = await ChatRepository(session).recent(ROOM, limit=1000)
    assert len(stored) == HISTORY_ON_JOIN


async def test_resume_sends_what_was_missed_after_the_last_id(
    hub: Hub, history: ChatHistory
) -> None:
    seen = await hub.say("bob", ROOM, "seen")
    await hub.say("bob", ROOM, "missed 1")
    await history.flush()
    await hub.say("bob", ROOM, "missed 2")
    alice = FakeMember("alice")

    await hub.join(alice, ROOM, last_id=seen)

    history_frame = alice.frames()[0]
    assert history_frame["recovered"] is True
    assert [m["text"] for m in history_frame["messages"]] == ["missed 1", "missed 2"]


async def resume_after_missing(hub: Hub, history: ChatHistory, missed: int) -> dict[str, Any]:
    """Say ``seen``, then ``missed`` more messages (stored); return the history frame of a join
    resuming after ``seen``."""
    seen = await hub.say("bob", ROOM, "seen")
    for number in range(missed):
        await hub.say("bob", ROOM, f"missed {number}")
    await history.flush()
    alice = FakeMember("alice")
    await hub.join(alice, ROOM, last_id=seen)
    frame: dict[str, Any] = alice.frames()[0]
    return frame


async def test_resume_past_the_limit_sends_the_latest_and_says_not_recovered(
    hub: Hub, history: ChatHistory
) -> None:
    history_frame = await resume_after_missing(hub, history, RESUME_LIMIT + 1)

    assert history_frame["recovered"] is False
    texts = [m["text"] for m in history_frame["messages"]]
    assert texts == [f"missed {number}" for number in range(1, RESUME_LIMIT + 1)]


async def test_resume_with_nothing_missed_is_an_empty_recovered_history(hub: Hub) -> None:
    last = await hub.say("bob", ROOM, "latest")
    alice = FakeMember("alice")

    await hub.join(alice, ROOM, last_id=last)

    assert alice.frames()[0] == {
        "type": "history",
        "room": ROOM,
        "messages": [],
        "recovered": True,
    }


async def test_history_misses_nothing_the_writer_stores_while_it_is_read(
    monkeypatch: pytest.MonkeyPatch, hub: Hub, history: ChatHistory
) -> None:
    original = ChatRepository.recent

    async def read_then_writer_runs(
        self: ChatRepository, room: str, *, limit: int, after_id: int | None = None
    ) -> list[StoredMessage]:
        stored = await original(self, room, limit=limit, after_id=after_id)
        await history.flush()  # the background writer commits and dequeues meanwhile
        return stored

    await hub.say("bob", ROOM, "written during the read")
    monkeypatch.setattr(ChatRepository, "recent", read_then_writer_runs)
    alice = FakeMember("alice")

    await hub.join(alice, ROOM)

    texts = [message["text"] for message in alice.frames()[0]["messages"]]
    assert texts == ["written during the read"]


def test_encode_is_compact_json_that_keeps_text_as_typed() -> None:
    payload = encode("message", ROOM, user="alice", text="<img src=x onerror=alert(1)> 你好")

    assert payload == (
        '{"type":"message","room":"lobby","user":"alice",'
        '"text":"<img src=x onerror=alert(1)> 你好"}'
    )


async def test_resync_tells_every_member_of_every_local_room_who_is_online(hub: Hub) -> None:
    alice, bob, carol = FakeMember("alice"), FakeMember("bob"), FakeMember("carol")
    await hub.join(alice, ROOM)
    await hub.join(bob, ROOM)
    await hub.join(carol, "other")
    await hub.leave(carol, "other")  # a room nobody is in any more gets nothing
    for member in (alice, bob, carol):
        member.take()

    await hub.resync()

    expected = {"type": "presence", "room": ROOM, "users": ["alice", "bob"]}
    assert alice.frames() == bob.frames() == [expected]
    assert carol.frames() == []


# -- the window of recent messages in memory --------------------------------------------------


@dataclass
class Reads:
    """How many times the chat table was read (every read still reaches the database)."""

    count: int = 0
    failures: int = 0
    """Reads still to fail (as when the database is away) before they succeed again."""


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """Count the reads of the chat table; each one is the real query."""
    original = ChatRepository.recent
    counter = Reads()

    async def counted(
        self: ChatRepository, room: str, *, limit: int, after_id: int | None = None
    ) -> list[StoredMessage]:
        counter.count += 1
        if counter.failures:
            counter.failures -= 1
            raise ConnectionError("the database is away")
        return await original(self, room, limit=limit, after_id=after_id)

    monkeypatch.setattr(ChatRepository, "recent", counted)
    return counter


def texts(frame: dict[str, Any]) -> list[str]:
    """The texts of a history frame's messages."""
    return [message["text"] for message in frame["messages"]]


def from_elsewhere(message_id: int, text: str) -> str:
    """A message frame as another process publishes it (never stored by this one)."""
    return encode("message", ROOM, user="zoe", text=text, ts=1.0, id=message_id)


async def test_joins_arriving_together_read_the_room_once_and_later_joins_not_at_all(
    hub: Hub, history: ChatHistory, reads: Reads
) -> None:
    for number in range(3):
        await hub.say("bob", ROOM, f"m{number}")
    await history.flush()
    members = [FakeMember(f"user{number}") for number in range(20)]

    await asyncio.gather(*(hub.join(member, ROOM) for member in members))
    late = FakeMember("late")
    await hub.join(late, ROOM)

    assert reads.count == 1
    assert hub.recent.loads == 1
    for member in [*members, late]:
        assert texts(member.frames()[0]) == ["m0", "m1", "m2"]


async def test_messages_delivered_while_the_room_is_in_memory_reach_later_joins(
    hub: Hub, reads: Reads
) -> None:
    bob = FakeMember("bob")
    await hub.join(bob, ROOM)
    for number in range(HISTORY_ON_JOIN + 10):
        await hub.say("bob", ROOM, f"m{number}")
    alice = FakeMember("alice")

    await hub.join(alice, ROOM)

    assert reads.count == 1, "only bob's join read the table"
    assert texts(alice.frames()[0]) == [f"m{n}" for n in range(10, HISTORY_ON_JOIN + 10)]


async def test_messages_from_other_processes_are_kept_in_id_order_and_once(
    hub: Hub, reads: Reads
) -> None:
    bob = FakeMember("bob")
    await hub.join(bob, ROOM)

    for message_id, text in ((10, "first"), (30, "last"), (20, "between"), (20, "between")):
        hub.deliver(ROOM, from_elsewhere(message_id, text))  # late and twice, as may happen
    alice = FakeMember("alice")
    await hub.join(alice, ROOM)

    assert texts(alice.frames()[0]) == ["first", "between", "last"]
    assert reads.count == 1


async def test_a_resume_inside_the_window_is_answered_from_memory(hub: Hub, reads: Reads) -> None:
    bob = FakeMember("bob")
    await hub.join(bob, ROOM)
    hub.deliver(ROOM, from_elsewhere(10, "seen"))
    hub.deliver(ROOM, from_elsewhere(20, "only in memory"))
    await hub.say("bob", ROOM, "after")
    alice = FakeMember("alice")

    await hub.join(alice, ROOM, last_id=10)

    history_frame = alice.frames()[0]
    assert texts(history_frame) == ["only in memory", "after"]
    assert history_frame["recovered"] is True
    assert reads.count == 1


async def test_a_resume_reaching_before_the_window_reads_history(
    hub: Hub, history: ChatHistory, reads: Reads
) -> None:
    await hub.join(FakeMember("bob"), ROOM)  # the room is in memory

    history_frame = await resume_after_missing(hub, history, HISTORY_ON_JOIN + 1)

    assert texts(history_frame) == [f"missed {n}" for n in range(HISTORY_ON_JOIN + 1)]
    assert history_frame["recovered"] is True
    assert reads.count == 2


async def test_a_room_leaves_memory_with_its_last_local_member(hub: Hub, reads: Reads) -> None:
    alice, bob = FakeMember("alice"), FakeMember("bob")
    await hub.join(alice, ROOM)
    await hub.join(bob, ROOM)
    await hub.join(FakeMember("carol"), "elsewhere")
    await hub.leave(alice, ROOM)
    assert len(hub.recent) == 2

    await hub.leave(bob, ROOM)
    assert len(hub.recent) == 1
    hub.deliver(ROOM, from_elsewhere(1, "nobody here"))  # not remembered
    alice.take()
    await hub.join(alice, ROOM)

    assert reads.count == 3, "the room was read again"
    assert texts(alice.frames()[0]) == []


async def test_a_failed_load_fails_every_waiting_join_and_the_next_join_loads_again(
    hub: Hub, history: ChatHistory, reads: Reads
) -> None:
    await hub.say("bob", ROOM, "kept")
    await history.flush()
    reads.failures = 1
    waiting = [FakeMember(f"user{number}") for number in range(3)]

    outcomes = await asyncio.gather(
        *(hub.join(member, ROOM) for member in waiting), return_exceptions=True
    )

    assert [type(outcome) for outcome in outcomes] == [ConnectionError] * 3
    assert reads.count == 1, "the waiting joins shared one load"
    assert list(hub.members(ROOM)) == [] and len(hub.recent) == 0
    alice = FakeMember("alice")
    await hub.join(alice, ROOM)
    assert texts(alice.frames()[0]) == ["kept"]
    assert reads.count == 2


async def test_resync_keeps_the_rooms_in_memory(hub: Hub, reads: Reads) -> None:
    await hub.join(FakeMember("bob"), ROOM)

    await hub.resync()
    await hub.join(FakeMember("alice"), ROOM)

    assert reads.count == 1, "the fill, not a reload, brings what was missed"


# -- after the bus resubscribes: the fill, and each message once ------------------------------


def stored_elsewhere(message_id: int, text: str) -> StoredMessage:
    """A message of ROOM that another process minted and stored."""
    return StoredMessage(id=message_id, room=ROOM, user="zoe", text=text, created_at=utcnow())


async def test_a_message_that_arrives_again_reaches_the_members_once(hub: Hub) -> None:
    bob = FakeMember("bob")
    await hub.join(bob, ROOM)
    bob.take()

    for message_id, text in ((10, "first"), (20, "second"), (10, "first"), (20, "second")):
        hub.deliver(ROOM, from_elsewhere(message_id, text))
    own = await hub.say("bob", ROOM, "own")
    hub.deliver(ROOM, encode("message", ROOM, user="bob", text="own", ts=1.0, id=own))

    assert [frame["text"] for frame in bob.take()] == ["first", "second", "own"]


async def test_the_fill_delivers_what_was_missed_once_and_in_id_order(
    hub: Hub, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bob = FakeMember("bob")
    await hub.join(bob, ROOM)
    await hub.join(FakeMember("carol"), "elsewhere")
    hub.deliver(ROOM, from_elsewhere(10, "delivered before the outage"))
    bob.take()
    async with sessions() as session, session.begin():  # what other processes stored
        await ChatRepository(session).add_many(
            [
                stored_elsewhere(5, "before the fill's start"),
                stored_elsewhere(10, "delivered before the outage"),
                stored_elsewhere(20, "stored"),
                stored_elsewhere(40, "stored, and not yet queued elsewhere"),
            ]
        )
    unstored = [
        (ROOM, from_elsewhere(30, "queued for storage elsewhere")),
        (ROOM, from_elsewhere(20, "stored")),
        ("nobody-here", encode("message", "nobody-here", user="zoe", text="x", ts=1.0, id=35)),
    ]

    await hub.fill(7, unstored)

    assert [frame["text"] for frame in bob.take()] == [
        "stored",
        "queued for storage elsewhere",
        "stored, and not yet queued elsewhere",
    ]
    await hub.fill(7, unstored)
    hub.deliver(ROOM, from_elsewhere(30, "queued for storage elsewhere"))  # published again
    assert bob.take() == [], "nothing twice"
    alice = FakeMember("alice")
    await hub.join(alice, ROOM)
    assert texts(alice.frames()[0])[-3:] == [
        "stored",
        "queued for storage elsewhere",
        "stored, and not yet queued elsewhere",
    ]


async def test_unstored_lists_the_messages_still_queued_for_storage_after_an_id(
    hub: Hub, history: ChatHistory
) -> None:
    first = await hub.say("bob", ROOM, "stored")
    await history.flush()
    second = await hub.say("bob", ROOM, "queued")
    third = await hub.say("bob", "other", "queued elsewhere")

    unstored = hub.unstored(first)

    assert [(room, json.loads(payload)["id"]) for room, payload in unstored] == [
        (ROOM, second),
        ("other", third),
    ]
    assert hub.unstored(third) == []


async def test_a_resume_read_from_history_keeps_messages_delivered_during_the_read(
    hub: Hub, history: ChatHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hub.join(FakeMember("bob"), ROOM)  # the room is in memory, its window soon full
    seen = await hub.say("bob", ROOM, "seen")
    for number in range(HISTORY_ON_JOIN + 1):
        await hub.say("bob", ROOM, f"missed {number}")
    await history.flush()
    original = ChatRepository.recent
    during = hub.ids.next()

    async def read_while_a_message_arrives(
        self: ChatRepository, room: str, *, limit: int, after_id: int | None = None
    ) -> list[StoredMessage]:
        stored = await original(self, room, limit=limit, after_id=after_id)
        hub.deliver(ROOM, from_elsewhere(during, "during the read"))  # not in what was read
        return stored

    monkeypatch.setattr(ChatRepository, "recent", read_while_a_message_arrives)
    alice = FakeMember("alice")

    await hub.join(alice, ROOM, last_id=seen)

    history_frame = alice.frames()[0]
    expected = [f"missed {n}" for n in range(HISTORY_ON_JOIN + 1)] + ["during the read"]
    assert texts(history_frame) == expected
    assert history_frame["recovered"] is True


async def test_a_room_that_overflowed_during_its_first_load_sends_a_resume_to_history(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ChatRepository.recent
    sent: list[int] = []

    async def messages_arrive_during_the_load(
        self: ChatRepository, room: str, *, limit: int, after_id: int | None = None
    ) -> list[StoredMessage]:
        stored = await original(self, room, limit=limit, after_id=after_id)
        if after_id is None and not sent:  # more than the window: the first ones are pushed out
            for number in range(HISTORY_ON_JOIN + 10):
                sent.append(await hub.say("bob", ROOM, f"m{number}"))
        return stored

    monkeypatch.setattr(ChatRepository, "recent", messages_arrive_during_the_load)
    await hub.join(FakeMember("bob"), ROOM)
    alice = FakeMember("alice")

    await hub.join(alice, ROOM, last_id=sent[0])

    history_frame = alice.frames()[0]
    assert texts(history_frame) == [f"m{n}" for n in range(1, HISTORY_ON_JOIN + 10)]
    assert history_frame["recovered"] is True


@dataclass(eq=False)
class GoneMember(FakeMember):
    """A member whose connection is gone: every send fails."""

    def send(self, payload: str) -> None:
        """Fail as a closed connection does."""
        raise ConnectionResetError("the connection is gone")


async def test_a_failed_join_leaves_the_users_other_connection_present(hub: Hub) -> None:
    bob, first_tab, second_tab = FakeMember("bob"), FakeMember("alice"), GoneMember("alice")
    await hub.join(bob, ROOM)
    await hub.join(first_tab, ROOM)
    bob.take()

    with pytest.raises(ConnectionResetError):
        await hub.join(second_tab, ROOM)
    await hub.leave(second_tab, ROOM)  # what closing the failed socket does

    assert bob.take() == []
    assert await hub.online(ROOM) == ["alice", "bob"]
    assert set(hub.members(ROOM)) == {bob, first_tab}
    await hub.leave(first_tab, ROOM)
    [left] = bob.take()
    assert (left["type"], left["user"]) == ("leave", "alice")


async def test_a_failed_first_join_leaves_no_room_behind(hub: Hub) -> None:
    with pytest.raises(ConnectionResetError):
        await hub.join(GoneMember("alice"), ROOM)

    assert hub.rooms() == [] and len(hub.recent) == 0
    assert await hub.online(ROOM) == []

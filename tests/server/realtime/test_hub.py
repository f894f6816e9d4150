"""The hub without any transport: members are fakes that collect payloads, the bus and presence
are the single-process ones, and history is a real database (SQLite, and MariaDB when
configured)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.chat import ChatRepository, StoredMessage
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


async def test_resume_past_the_limit_sends_the_latest_and_says_not_recovered(
    hub: Hub, history: ChatHistory
) -> None:
    seen = await hub.say("bob", ROOM, "seen")
    for number in range(RESUME_LIMIT + 1):
        await hub.say("bob", ROOM, f"missed {number}")
    await history.flush()
    alice = FakeMember("alice")

    await hub.join(alice, ROOM, last_id=seen)

    history_frame = alice.frames()[0]
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

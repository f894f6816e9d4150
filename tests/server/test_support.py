"""``SupportDesk`` under concurrency, on SQLite and MariaDB: two agents answering and one (or
both) closing a thread at the same moment, 20 rounds, always leave one consistent thread: one
close wins, every message accepted is stored and delivered and none after the close, and the
row's status, counter, newest message and last agent agree with what is stored; the last
``thread`` frame sent says the same. Also: two first visits at once open one thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.chat import ChatRepository
from repositories.errors import Conflict
from repositories.support import CLOSED, SupportRepository
from repositories.users import UserRepository
from server.permissions import CHAT_USE, SUPPORT_ANSWER
from server.principal import Principal
from server.realtime.rooms import QUEUE_ROOM, RoomRefused, thread_room
from server.services import Services, open_services
from tests.conftest import make_settings
from tests.grants import grant_in_session

ROUNDS = 20


@dataclass
class Recorder:
    """A hub member that keeps every frame it is sent."""

    user: str
    frames: list[dict[str, Any]] = field(default_factory=list)

    def send(self, payload: str) -> None:
        """Keep the frame."""
        self.frames.append(json.loads(payload))

    def __hash__(self) -> int:
        return id(self)


@pytest.fixture
async def desk_services(
    tmp_path: Path, database_url: str, engine: AsyncEngine
) -> AsyncIterator[Services]:
    """Services on ``database_url`` (``engine`` wipes MariaDB afterwards)."""
    services = await open_services(make_settings(tmp_path, database_url))
    try:
        yield services
    finally:
        await services.close()


async def principal(services: Services, name: str, *permissions: str) -> Principal:
    """Create ``name`` holding ``permissions``; their principal."""
    async with services.sessions() as session, session.begin():
        users = UserRepository(session)
        user = await users.add(name=name, password_hash="x")
        role_id = await grant_in_session(session, user.id, *permissions)
    return Principal(user.id, name, False, frozenset({role_id}))


async def test_two_agents_answering_while_closing_leave_a_consistent_thread(
    desk_services: Services,
) -> None:
    services = desk_services
    carol = await principal(services, "carol", CHAT_USE)
    ann = await principal(services, "ann", CHAT_USE, SUPPORT_ANSWER)
    bob = await principal(services, "bob", CHAT_USE, SUPPORT_ANSWER)
    names = {carol.user_id: "carol", ann.user_id: "ann", bob.user_id: "bob"}
    queue = Recorder("queue")
    await services.hub.join(queue, QUEUE_ROOM)

    for round_number in range(ROUNDS):
        thread = await services.support.open_thread(carol)
        room = thread_room(thread.id)
        listener = Recorder(f"listener-{round_number}")
        await services.hub.join(listener, room)
        as_carol, as_ann, as_bob = [
            await services.rooms.admit(who, room) for who in (carol, ann, bob)
        ]
        assert as_carol is not None and as_ann is not None and as_bob is not None
        first = await services.rooms.say(as_carol, "carol", "help")
        both_close = round_number % 2 == 1

        outcomes = await asyncio.gather(
            services.rooms.say(as_ann, "ann", f"ann {round_number}"),
            services.rooms.say(as_bob, "bob", f"bob {round_number}"),
            services.support.close(ann, thread.id),
            *([services.support.close(bob, thread.id)] if both_close else []),
            return_exceptions=True,
        )

        said, closes = outcomes[:2], outcomes[2:]
        for outcome in said:
            assert isinstance(outcome, int) or (
                isinstance(outcome, RoomRefused) and outcome.code == "closed"
            ), outcome
        assert sum(not isinstance(close, Exception) for close in closes) == 1, closes
        for close in closes:
            assert not isinstance(close, Exception) or (
                isinstance(close, Conflict) and close.code == "thread_closed"
            ), close
        accepted = {first} | {outcome for outcome in said if isinstance(outcome, int)}

        async with services.sessions() as session:
            stored = await ChatRepository(session).recent(room, limit=10)
            view = await SupportRepository(session).view(thread.id)
        assert view is not None
        row = view.thread
        assert {message.id for message in stored} == accepted, "stored = accepted"
        delivered = {f["id"] for f in listener.frames if f["type"] == "message"}
        assert delivered == accepted, "delivered = accepted"
        assert row.status == CLOSED and row.open_for is None and row.closed_at is not None
        assert row.version == len(accepted) + 1, "one change per message, one for the close"
        assert row.last_message_id == max(accepted)
        agent_messages = [message for message in stored if message.staff]
        if agent_messages:
            newest = max(agent_messages, key=lambda message: message.id)
            assert names[row.answered_by or 0] == newest.user
            assert stored[-1].id == max(accepted)
        else:
            assert row.answered_by is None
        assert {message.user for message in agent_messages} <= {"ann", "bob"}
        assert all(message.staff == (message.user != "carol") for message in stored)
        sent = [
            f["thread"]
            for f in queue.frames
            if f["type"] == "thread" and f["thread"]["id"] == thread.id
        ]
        newest_frame = max(sent, key=lambda frame: frame["version"])
        assert newest_frame["version"] == row.version and newest_frame["status"] == "closed"
        await services.hub.leave(listener, room)


async def test_two_first_visits_at_once_open_one_thread(desk_services: Services) -> None:
    services = desk_services
    carol = await principal(services, "carol", CHAT_USE)

    for _ in range(5):
        opened = await asyncio.gather(*(services.support.open_thread(carol) for _ in range(4)))
        assert len({thread.id for thread in opened}) == 1, opened
        ann = await principal(services, f"ann-{opened[0].id}", CHAT_USE, SUPPORT_ANSWER)
        await services.support.close(ann, opened[0].id)

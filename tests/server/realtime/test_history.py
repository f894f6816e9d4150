"""ChatHistory's writer on a real database (SQLite, and MariaDB when configured): what it does
with a batch the database refuses, and with a queue that overflows while a batch is written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.chat import ChatRepository, StoredMessage
from repositories.models import utcnow
from server.realtime import history as history_module
from server.realtime.history import ChatHistory

ROOM = "lobby"


@pytest.fixture
async def history(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[ChatHistory]:
    """History on a fresh database, without the background writer (tests flush themselves)."""
    chat_history = ChatHistory(sessions)
    try:
        yield chat_history
    finally:
        await chat_history.close()


def message(message_id: int, text: str | None = None) -> StoredMessage:
    """A message of ROOM with ``message_id`` (its text says which one unless given)."""
    return StoredMessage(
        id=message_id, room=ROOM, user="bob", text=text or f"m{message_id}", created_at=utcnow()
    )


async def stored_ids(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """The ids of ROOM's stored messages, oldest first."""
    async with sessions() as session:
        return [stored.id for stored in await ChatRepository(session).recent(ROOM, limit=1000)]


async def test_a_batch_the_database_refuses_is_set_aside_and_later_messages_are_stored(
    history: ChatHistory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    history.record(message(1, "never UTF-8: \ud800"))

    await history.flush()
    history.record(message(2))
    await history.flush()

    assert (history.refused, await stored_ids(sessions)) == (1, [2])


async def test_a_database_outage_keeps_the_batch_queued_for_the_next_try(
    history: ChatHistory,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history.record(message(1))

    with monkeypatch.context() as patch:

        async def away(self: ChatRepository, messages: Sequence[StoredMessage]) -> None:
            raise ConnectionError("the database is away")

        patch.setattr(ChatRepository, "add_many", away)
        with pytest.raises(ConnectionError):
            await history.flush()
    await history.flush()

    assert await stored_ids(sessions) == [1], "written on the next try"
    assert history.refused == 0


async def test_messages_queued_past_the_limit_during_a_write_are_not_lost(
    history: ChatHistory,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_module, "QUEUE_LIMIT", 3)
    original = ChatRepository.add_many
    arriving = [message(4), message(5)]

    async def write_while_messages_arrive(
        self: ChatRepository, messages: Sequence[StoredMessage]
    ) -> None:
        await original(self, messages)
        while arriving:  # the queue is full: each one pushes out the oldest, being written
            history.record(arriving.pop(0))

    monkeypatch.setattr(ChatRepository, "add_many", write_while_messages_arrive)
    for message_id in (1, 2, 3):
        history.record(message(message_id))

    await history.flush()

    assert history.dropped == 2
    assert await stored_ids(sessions) == [1, 2, 3, 4, 5]

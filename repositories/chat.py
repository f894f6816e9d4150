"""The chat repository: room history, written in batches and read back newest last."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.models import ChatMessage


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A chat message as history returns it."""

    id: int
    room: str
    user: str
    text: str
    created_at: dt.datetime
    staff: bool = False
    """Said by support staff in a support conversation."""


class ChatRepository:
    """Append messages (many at once) and read a room's recent ones."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, messages: Sequence[StoredMessage]) -> None:
        """Insert ``messages`` in one statement."""
        if not messages:
            return
        await self.session.execute(
            insert(ChatMessage),
            [
                {
                    "id": message.id,
                    "room": message.room,
                    "user_name": message.user,
                    "text": message.text,
                    "created_at": message.created_at,
                    "staff": message.staff,
                }
                for message in messages
            ],
        )

    async def recent(
        self, room: str, *, limit: int, after_id: int | None = None
    ) -> list[StoredMessage]:
        """The room's last ``limit`` messages (after ``after_id`` when given), oldest first."""
        query = select(
            ChatMessage.id,
            ChatMessage.room,
            ChatMessage.user_name,
            ChatMessage.text,
            ChatMessage.created_at,
            ChatMessage.staff,
        ).where(ChatMessage.room == room)
        if after_id is not None:
            query = query.where(ChatMessage.id > after_id)
        query = query.order_by(ChatMessage.id.desc()).limit(limit)
        rows = await self.session.execute(query)
        messages = [StoredMessage(*row) for row in rows]
        messages.reverse()
        return messages

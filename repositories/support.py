"""The support repository: private support conversations (``support_thread``) and their messages.

A thread's state changes only through one conditional ``UPDATE ... WHERE status <> 'closed'``
whose row count says whether it happened: a message is stored together with the change it makes
(in the caller's transaction), so a message and a close racing each other are ordered by the
row's lock, and a thread never holds a message accepted after it was closed. The first
statement of each writing method is that UPDATE, so SQLite takes its write lock before reading
anything (no stale snapshot to upgrade).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import CursorResult, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from repositories.chat import ChatRepository, StoredMessage
from repositories.models import ChatMessage, SupportThread, User, utcnow

NEW: Final = "new"
WAITING: Final = "waiting"
ANSWERED: Final = "answered"
CLOSED: Final = "closed"
THREAD_STATUSES: Final = (NEW, WAITING, ANSWERED, CLOSED)
"""``new``: no agent has answered yet; ``waiting``: the customer wrote after an answer;
``answered``: the newest message is an agent's; ``closed``: nothing more is said."""


@dataclass(frozen=True, slots=True)
class ThreadView:
    """A thread as pages and frames show it: the row, its customer's name, its newest
    message (None while it has none)."""

    thread: SupportThread
    customer: str
    last: StoredMessage | None


class SupportRepository:
    """Open, list, write to and close support threads (flushes, never commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def customer_id(self, thread_id: int) -> int | None:
        """The customer of thread ``thread_id``, or None when there is no such thread."""
        return await self.session.scalar(
            select(SupportThread.customer_id).where(SupportThread.id == thread_id)
        )

    async def get_open_for(self, customer_id: int) -> SupportThread | None:
        """The customer's open thread, or None."""
        return await self.session.scalar(
            select(SupportThread).where(SupportThread.open_for == customer_id)
        )

    async def open_for(self, customer_id: int) -> tuple[SupportThread, bool]:
        """The customer's open thread, created when they have none; True when created.

        The INSERT comes first (SQLite takes its write lock before reading anything); when
        the customer has an open thread already, the unique ``open_for`` refuses it, in a
        savepoint, and that thread is read instead. Two first visits at once cannot make two
        threads.
        """
        now = utcnow()
        thread = SupportThread(
            customer_id=customer_id,
            open_for=customer_id,
            status=NEW,
            version=0,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.session.begin_nested():
                self.session.add(thread)
                await self.session.flush()
        except IntegrityError:
            existing = await self.get_open_for(customer_id)
            if existing is None:  # closed again in between: not worth a second try
                raise
            return existing, False
        return thread, True

    async def add_message(
        self, thread_id: int, message: StoredMessage, *, agent_id: int | None
    ) -> bool:
        """Store ``message`` in an open thread and move its status: said by the customer
        (``agent_id`` None) or by the agent ``agent_id``. False, and nothing stored, when the
        thread is closed or gone.

        The status, ``last_message_id`` and ``answered_by`` follow the newest message by id, so
        two messages stored in the other order than their ids leave the state the newer one
        sets.
        """
        accepted = await self._change(
            SupportThread.status != CLOSED,
            thread_id,
            version=SupportThread.version + 1,
            updated_at=utcnow(),
        )
        if not accepted:
            return False
        values: dict[str, Any] = {"last_message_id": message.id}
        if agent_id is None:
            values["status"] = case((SupportThread.status == NEW, NEW), else_=WAITING)
        else:
            values["status"] = ANSWERED
            values["answered_by"] = agent_id
        newest = or_(
            SupportThread.last_message_id.is_(None), SupportThread.last_message_id < message.id
        )
        # The row is locked by the change above: this second statement cannot race.
        await self._change(newest, thread_id, **values)
        await ChatRepository(self.session).add_many([message])
        return True

    async def close(self, thread_id: int, closed_by: int) -> bool:
        """Close an open thread; False when it was closed already (or is gone): of two closes
        at once, exactly one returns True."""
        now = utcnow()
        return await self._change(
            SupportThread.status != CLOSED,
            thread_id,
            status=CLOSED,
            open_for=None,
            closed_by=closed_by,
            closed_at=now,
            updated_at=now,
            version=SupportThread.version + 1,
        )

    async def view(self, thread_id: int) -> ThreadView | None:
        """Thread ``thread_id`` with its customer's name and newest message, or None."""
        rows = await self.session.execute(_views().where(SupportThread.id == thread_id))
        found = [_view(row) for row in rows]
        return found[0] if found else None

    async def list_open(self, *, limit: int) -> list[ThreadView]:
        """The queue: open threads with at least one message, those waiting for an agent
        (``new``, ``waiting``) first, each group longest-waiting first."""
        rank = case((SupportThread.status == ANSWERED, 1), else_=0)
        query = (
            _views()
            .where(SupportThread.status != CLOSED, SupportThread.last_message_id.is_not(None))
            .order_by(rank, SupportThread.updated_at, SupportThread.id)
            .limit(limit)
        )
        return [_view(row) for row in await self.session.execute(query)]

    async def count_open(self) -> int:
        """How many threads the queue holds (open, with at least one message)."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(SupportThread)
            .where(SupportThread.status != CLOSED, SupportThread.last_message_id.is_not(None))
        )
        return int(count or 0)

    async def list_for_customer(self, customer_id: int, *, limit: int) -> list[ThreadView]:
        """The customer's threads, newest first."""
        query = (
            _views()
            .where(SupportThread.customer_id == customer_id)
            .order_by(SupportThread.id.desc())
            .limit(limit)
        )
        return [_view(row) for row in await self.session.execute(query)]

    async def messages(
        self, thread_id: int, *, limit: int, after_id: int | None = None
    ) -> list[StoredMessage]:
        """The thread's last ``limit`` messages (after ``after_id``), oldest first."""
        return await ChatRepository(self.session).recent(
            thread_room_name(thread_id), limit=limit, after_id=after_id
        )

    async def _change(self, condition: Any, thread_id: int, **values: Any) -> bool:
        result = await self.session.execute(
            update(SupportThread)
            .where(SupportThread.id == thread_id, condition)
            .values(values)
            .execution_options(synchronize_session=False)
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1


def thread_room_name(thread_id: int) -> str:
    """The chat room of thread ``thread_id``: ``support-<id>``."""
    return f"support-{thread_id}"


def _views() -> Select[SupportThread, str, int, str, str, dt.datetime, bool]:
    return (
        select(
            SupportThread,
            User.name,
            ChatMessage.id,
            ChatMessage.user_name,
            ChatMessage.text,
            ChatMessage.created_at,
            ChatMessage.staff,
        )
        .join(User, User.id == SupportThread.customer_id)
        .outerjoin(ChatMessage, ChatMessage.id == SupportThread.last_message_id)
        # The conditional UPDATEs bypass the session: a thread already loaded is read again.
        .execution_options(populate_existing=True)
    )


def _view(row: Sequence[Any]) -> ThreadView:
    thread, customer, message_id, user, text, created_at, staff = row
    last = None
    if message_id is not None:
        last = StoredMessage(
            id=message_id,
            room=thread_room_name(thread.id),
            user=user,
            text=text,
            created_at=created_at,
            staff=bool(staff),
        )
    return ThreadView(thread=thread, customer=customer, last=last)

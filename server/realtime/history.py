"""Chat history: messages are queued for a background writer, so persisting never delays
delivery; reads merge what is stored with what is still queued."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.chat import ChatRepository, StoredMessage
from server.background import cancel_and_wait
from server.errors import is_database_outage

log = logging.getLogger("mservices.chat")

BATCH = 200
QUEUE_LIMIT = 20_000


class ChatHistory:
    """Writes messages in batches in the background and reads a room's recent ones."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pending: deque[StoredMessage] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        self.dropped = 0
        """Messages pushed out of a full queue (never stored unless already being written)."""
        self.refused = 0
        """Messages of batches the database refused (not an outage): set aside, never stored."""

    def record(self, message: StoredMessage) -> None:
        """Queue ``message`` for storage (never waits; past QUEUE_LIMIT the oldest is dropped
        and counted, so a database outage cannot exhaust memory)."""
        if len(self._pending) >= QUEUE_LIMIT:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(message)
        self._wake.set()

    async def recent(
        self, room: str, *, limit: int, after_id: int | None = None
    ) -> list[StoredMessage]:
        """The room's last ``limit`` messages (after ``after_id``), stored or still queued."""
        # Snapshot the queue first: a batch the writer commits during the read below is then in
        # the snapshot, the database, or both, never in neither.
        queued = [
            message
            for message in self._pending
            if message.room == room and (after_id is None or message.id > after_id)
        ]
        async with self._sessions() as session:
            stored = await ChatRepository(session).recent(room, limit=limit, after_id=after_id)
        merged = {message.id: message for message in [*stored, *queued]}
        return [merged[key] for key in sorted(merged)][-limit:]

    def queued(self, after_id: int) -> list[StoredMessage]:
        """The messages after ``after_id`` still queued for storage (not in the database yet,
        or being written), oldest first: what another process filling its rooms cannot read."""
        return [message for message in self._pending if message.id > after_id]

    def start(self) -> None:
        """Start the writer."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._write_forever())

    async def close(self) -> None:
        """Write what is queued (best effort), then stop."""
        if self._task is not None:
            # Cancels until the task has ended: on Python 3.11 a cancellation that lands as an
            # awaited wait_for (redis-py, asyncmy) finishes can be lost (cpython#86296).
            await cancel_and_wait(self._task)
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def flush(self) -> None:
        """Write every queued message now (one writer at a time).

        When the database is away the error propagates and the queue is kept (the writer tries
        again). A batch the database refuses for any other reason would be refused forever: it
        is set aside (logged and counted in ``refused``) so later messages are still stored.
        """
        async with self._writing:
            while self._pending:
                batch = list(itertools.islice(self._pending, BATCH))
                try:
                    async with self._sessions() as session, session.begin():
                        await ChatRepository(session).add_many(batch)
                except Exception as error:
                    if is_database_outage(error):
                        raise
                    self.refused += len(batch)
                    log.error(
                        "chat history: %d messages (ids %d to %d) refused by the database and "
                        "set aside: %r",
                        len(batch),
                        batch[0].id,
                        batch[-1].id,
                        error,
                    )
                # record() may have pushed some of the batch out during the write: dequeue what
                # is left of it (still at the front), never the messages queued since.
                written = {message.id for message in batch}
                while self._pending and self._pending[0].id in written:
                    self._pending.popleft()

    async def _write_forever(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                # close() cancels the writer: the write in progress still finishes (shielded),
                # and close's own flush waits for it through the lock.
                await asyncio.shield(self.flush())
                delay = 0.1
            except Exception as error:  # the database is away: keep the queue, retry later
                log.warning("chat history not written yet (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._wake.set()

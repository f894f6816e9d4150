"""The last messages of each room in memory, so joining a room does not read the database.

``RecentMessages`` keeps, for every room with a local member, its last ``size`` messages as
frame fields (``{"user", "text", "ts", "id"}``), in id order without duplicates. A room is
loaded from history once, on first need: concurrent first joins await the same load (one task
per room), and a failed load is forgotten, so the next join tries again. From then on the hub
adds every message it delivers, its own and those arriving from other processes through the
bus (a message may arrive twice, or out of order across processes: both are handled). The hub
drops a room when its last local member leaves, and every room when the bus resubscribes (frames
published while it was away never arrived, so memory may lack some), so memory stays bounded by
the rooms in use.

Each room also remembers the ids of the last SEEN_LIMIT messages it delivered or loaded, so a
message that arrives again (published again by its origin once Redis is back, or both filled
from history after a resubscription and received live) is delivered once: ``remember`` says
whether a frame is new. The hub keeps a room's memory through a resubscription and fills in what
was missed (``Hub.fill``).

A message another process has published but not yet stored when a room is loaded is missed
until the room is next loaded, as a read of the database would have missed it.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from repositories.chat import StoredMessage
from server.realtime.history import ChatHistory

Fields = dict[str, Any]
"""One message as a history frame lists it: ``{"user", "text", "ts", "id"}``, and
``"staff": true`` for what support staff said."""
MESSAGE_PREFIX = '{"type":"message",'
"""How an encoded message frame starts (``hub.encode`` puts ``type`` first)."""
SEEN_LIMIT = 10_000
"""Message ids each room in memory remembers having delivered, to deliver each once."""


def message_fields(message: StoredMessage) -> Fields:
    """The frame fields of a stored message (``staff`` only when true: what support staff
    said in a support conversation)."""
    fields: Fields = {
        "user": message.user,
        "text": message.text,
        "ts": message.created_at.timestamp(),
        "id": message.id,
    }
    if message.staff:
        fields["staff"] = True
    return fields


def frame_fields(payload: str) -> Fields | None:
    """The message fields of an encoded ``message`` frame; None for any other frame."""
    if not payload.startswith(MESSAGE_PREFIX):
        return None
    frame = json.loads(payload)
    fields = {key: frame[key] for key in ("user", "text", "ts", "id")}
    if frame.get("staff"):
        fields["staff"] = True
    return fields


@dataclass(eq=False)
class RoomMessages:
    """One room's last messages, oldest first."""

    size: int
    messages: list[Fields] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    """The ids of ``messages``, for bisecting."""
    complete: bool = False
    """True while ``messages`` are every message the room ever had (nothing older exists)."""
    loading: asyncio.Task[None] | None = None
    encoded: str | None = None
    """The hub's ``history`` frame of ``messages``, kept until they change: a burst of joins
    encodes it once."""
    seen: set[int] = field(default_factory=set)
    """The ids of the last SEEN_LIMIT messages delivered or loaded."""
    seen_order: deque[int] = field(default_factory=deque)
    forgotten: int = 0
    """The highest id pushed out of ``seen``: whether an older message was delivered is no
    longer known."""

    def see(self, message_id: int) -> bool:
        """Note ``message_id`` as delivered; False when it was already."""
        if message_id in self.seen:
            return False
        self.seen.add(message_id)
        self.seen_order.append(message_id)
        if len(self.seen_order) > SEEN_LIMIT:
            oldest = self.seen_order.popleft()
            self.seen.discard(oldest)
            self.forgotten = max(self.forgotten, oldest)
        return True

    def add(self, fields: Fields) -> bool:
        """Insert a message in id order; False when it was here already or is older than every
        message kept in a full room."""
        message_id = fields["id"]
        at = bisect.bisect_left(self.ids, message_id)
        if at < len(self.ids) and self.ids[at] == message_id:
            return False
        if at == 0 and len(self.ids) >= self.size:
            self.complete = False  # older than the whole window: it exists, but is not kept
            return False
        self.ids.insert(at, message_id)
        self.messages.insert(at, fields)
        self.encoded = None
        if len(self.ids) > self.size:
            del self.ids[0], self.messages[0]
            self.complete = False
        return True

    def after(self, last_id: int) -> list[Fields] | None:
        """The messages after ``last_id``, or None when some may be missing from memory (the
        gap reaches further back than the window)."""
        if not self.complete and (not self.ids or last_id < self.ids[0]):
            return None
        return self.kept_after(last_id)

    def kept_after(self, last_id: int) -> list[Fields]:
        """The messages in memory after ``last_id``, whether or not older ones are missing."""
        return self.messages[bisect.bisect_right(self.ids, last_id) :]


class RecentMessages:
    """The last ``size`` messages of each room in use, filled from ``history`` once a room."""

    def __init__(self, history: ChatHistory, size: int) -> None:
        self._history = history
        self.size = size
        self._rooms: dict[str, RoomMessages] = {}
        self.loads = 0
        """How many times a room was read from history (for tests and metrics)."""

    async def room(self, room: str) -> RoomMessages:
        """The messages of ``room``, loading them first if no one has yet (concurrent callers
        share one load; its failure reaches each of them and leaves nothing behind)."""
        entry = self._rooms.get(room)
        if entry is None:
            # Complete until shown otherwise: a message pushed out during the load clears it.
            entry = self._rooms[room] = RoomMessages(self.size, complete=True)
            entry.loading = asyncio.ensure_future(self._load(room, entry))
            # Retrieved even if every waiter is cancelled, so it is never logged as lost.
            entry.loading.add_done_callback(_retrieve)
        if entry.loading is not None:
            # Shielded: one cancelled join must not cancel the load the others are awaiting.
            await asyncio.shield(entry.loading)
        return entry

    def remember(self, room: str, payload: str) -> bool:
        """Keep a frame of ``room`` about to be delivered if it is a message and the room is in
        memory (being loaded included); False when that message was delivered already (drop
        it). Any other frame or room costs a dictionary lookup."""
        entry = self._rooms.get(room)
        if entry is not None:
            fields = frame_fields(payload)
            if fields is not None:
                if not entry.see(fields["id"]):
                    return False
                entry.add(fields)
        return True

    def forgotten(self, room: str) -> int:
        """The highest id ``room`` no longer knows whether it delivered (0: it knows them all,
        or the room is not in memory)."""
        entry = self._rooms.get(room)
        return 0 if entry is None else entry.forgotten

    def drop(self, room: str) -> None:
        """Forget ``room`` (its last local member left); a load in progress finishes unused."""
        self._rooms.pop(room, None)

    def clear(self) -> None:
        """Forget every room (memory may have missed messages)."""
        self._rooms.clear()

    def __len__(self) -> int:
        return len(self._rooms)

    async def _load(self, room: str, entry: RoomMessages) -> None:
        try:
            stored = await self._history.recent(room, limit=self.size)
        except BaseException:
            if self._rooms.get(room) is entry:  # not poisoned: the next join loads again
                del self._rooms[room]
            raise
        finally:
            entry.loading = None
        self.loads += 1
        # Messages delivered while the load was running are in the entry already; if some were
        # pushed out meanwhile, the entry stays incomplete whatever the read found.
        entry.complete = entry.complete and len(stored) < self.size
        for message in stored:
            entry.see(message.id)  # joins send it as history: it must not come again
            entry.add(message_fields(message))


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()

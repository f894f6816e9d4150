"""The hub: rooms, presence, history and fan-out, knowing nothing of WebSocket or TCP.

A member is anything with a ``user`` and a non-blocking ``send(payload)``; each frame is encoded
once and the same string is handed to every member of the room in a row (a WebSocket member
frames it once for all, ``frames.py``, and writes the bytes to its stream).

Joining never reads the database once a room is in use: the hub keeps each room's last
HISTORY_ON_JOIN messages in memory (``recent.py``), loaded once per room and then fed with every
message it delivers, wherever it was published. A resume (``last_id``) is answered from memory
when the gap lies inside that window, and from history (at most RESUME_LIMIT messages) when it
reaches further back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, Protocol

from repositories.chat import StoredMessage
from repositories.models import utcnow
from server.realtime.bus import Bus
from server.realtime.history import ChatHistory
from server.realtime.ids import MessageIds
from server.realtime.presence import Presence
from server.realtime.recent import RecentMessages, message_fields

HISTORY_ON_JOIN = 50
RESUME_LIMIT = 200
DEFAULT_ROOM = "lobby"


class Member(Protocol):
    """One connection in a room."""

    user: str

    def send(self, payload: str) -> None:
        """Queue an encoded frame for this connection (must not block)."""


def encode(kind: str, room: str, **fields: Any) -> str:
    """A server frame as JSON text: ``{"type", "room", "user", "text", "ts", "id", ...}``."""
    frame: dict[str, Any] = {"type": kind, "room": room}
    frame.update(fields)
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


class Hub:
    """All rooms of this process, connected to the others through the bus."""

    def __init__(
        self, bus: Bus, presence: Presence, history: ChatHistory, ids: MessageIds | None = None
    ) -> None:
        self.bus = bus
        self.presence = presence
        self.history = history
        self.ids = ids or MessageIds()
        self._rooms: dict[str, dict[Member, bool]] = {}
        """Each room's local members, each with whether presence counted it (its join got that
        far), so only a counted member is taken out of presence when it leaves."""
        self.recent = RecentMessages(history, HISTORY_ON_JOIN)
        self.delivered = 0
        self.said = 0
        bus.subscribe(self.deliver)

    async def join(self, member: Member, room: str, *, last_id: int | None = None) -> None:
        """Add ``member`` to ``room``: send it history (or what it missed since ``last_id``) and
        who is online; announce the user when this is their first connection there.

        The member is added to the room as its history frame is sent, with no wait in between:
        a message delivered before is in the history, one delivered after comes as a frame.
        When history cannot be read (the database is away), or sending it or counting the
        member in presence fails (or the join is cancelled), the error propagates and the member
        is no longer in the room; presence, which never counted it, is left alone (the user's
        other connections stay present).
        """
        try:
            history = await self._history_frame(room, last_id)
        except BaseException:
            if room not in self._rooms:
                self.recent.drop(room)  # nobody here: keep nothing of the room in memory
            raise
        members = self._rooms.setdefault(room, {})
        members[member] = False
        try:
            member.send(history)
            first = await self.presence.join(room, member.user)
        except BaseException:
            self._remove(member, room)
            raise
        if members.get(member) is False:  # still here: from now on leaving is counted
            members[member] = True
        if first:
            await self.bus.publish(room, encode("join", room, user=member.user, ts=time.time()))
        member.send(encode("presence", room, users=await self.presence.online(room)))

    async def leave(self, member: Member, room: str) -> None:
        """Remove ``member``; announce the user when it was their last connection there.

        Presence is counted down only for a member whose join counted it. Transports call this
        once their ``join`` has returned or failed, never while it runs.
        """
        if not self._remove(member, room):
            return
        if await self.presence.leave(room, member.user):
            await self.bus.publish(room, encode("leave", room, user=member.user, ts=time.time()))

    async def say(self, user: str, room: str, text: str) -> int:
        """Publish ``text`` from ``user`` to ``room``; returns the message id. Storage happens in
        the background and never delays delivery."""
        message = StoredMessage(
            id=self.ids.next(), room=room, user=user, text=text, created_at=utcnow()
        )
        self.said += 1
        self.history.record(message)
        await self.bus.publish(room, encode("message", room, **message_fields(message)))
        return message.id

    async def resync(self) -> None:
        """Publish who is online now in every room with a member here, as a ``presence`` frame
        to every process's members of that room.

        The bus awaits this after it (re)subscribes, once presence has written this process's
        users back: joins and leaves published during an outage were lost, so members here and
        elsewhere may hold a stale online list. Rooms are refreshed one by one; a failure is
        left to the caller (the bus logs it and the next resubscription tries again).

        Rooms in memory are dropped first: messages published during the outage never reached
        this process, so the next join reads them from history.
        """
        self.recent.clear()
        for room in self.rooms():
            users = await self.presence.online(room)
            await self.bus.publish(room, encode("presence", room, users=users))

    async def online(self, room: str) -> list[str]:
        """Who is in ``room`` (every process)."""
        return await self.presence.online(room)

    def deliver(self, room: str, payload: str) -> None:
        """Hand an encoded frame to every local member of ``room`` (called by the bus), and
        remember it when it is a message of a room in memory."""
        self.recent.remember(room, payload)
        members = self._rooms.get(room)
        if members:
            for member in list(members):
                member.send(payload)
            self.delivered += len(members)

    async def _history_frame(self, room: str, last_id: int | None) -> str:
        """The ``history`` frame of a join: the room's last messages, or those after
        ``last_id`` (from memory when the gap is inside the window, else from history)."""
        recent = await self.recent.room(room)
        if last_id is None:
            if recent.encoded is None:
                recent.encoded = encode("history", room, messages=recent.messages, recovered=True)
            return recent.encoded
        messages = recent.after(last_id)
        if messages is not None:
            return encode("history", room, messages=messages, recovered=True)
        stored = await self.history.recent(room, limit=RESUME_LIMIT + 1, after_id=last_id)
        # Messages delivered during the read are in memory, maybe not in what was read.
        merged = {message.id: message_fields(message) for message in stored}
        merged.update((fields["id"], fields) for fields in recent.kept_after(last_id))
        missed = [merged[key] for key in sorted(merged)]
        return encode(
            "history",
            room,
            messages=missed[-RESUME_LIMIT:],
            recovered=len(stored) <= RESUME_LIMIT and len(missed) <= RESUME_LIMIT,
        )

    def _remove(self, member: Member, room: str) -> bool:
        """Take ``member`` out of ``room`` (and the room out of memory with its last member);
        True when presence had counted it."""
        members = self._rooms.get(room)
        if members is None or member not in members:
            return False
        counted = members.pop(member)
        if not members:
            del self._rooms[room]
            self.recent.drop(room)
        return counted

    def members(self, room: str) -> Iterable[Member]:
        """This process's members of ``room``."""
        return tuple(self._rooms.get(room, ()))

    def rooms(self) -> list[str]:
        """Rooms with at least one local member."""
        return sorted(self._rooms)

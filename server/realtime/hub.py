"""The hub: rooms, presence, history and fan-out, knowing nothing of WebSocket or TCP.

A member is anything with a ``user`` and a non-blocking ``send(payload)``; each frame is encoded
once and the same string is handed to every member of the room in a row (a WebSocket member
frames it once for all, ``frames.py``, and writes the bytes to its stream).

Joining never reads the database once a room is in use: the hub keeps each room's last
HISTORY_ON_JOIN messages in memory (``recent.py``), loaded once per room and then fed with every
message it delivers, wherever it was published. A resume (``last_id``) is answered from memory
when the gap lies inside that window, and from history (at most RESUME_LIMIT messages) when it
reaches further back.

Each message is delivered once per process: a message id the room delivered already is dropped
(``recent.py``). After the Redis bus resubscribes, ``fill`` delivers what the members here
missed meanwhile, read from history plus what other processes have not stored yet
(``redis_bus.py`` holds live frames until it is done, so per sender the order holds).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from repositories.chat import StoredMessage
from repositories.models import utcnow
from server.realtime.bus import Bus, Frames
from server.realtime.history import ChatHistory
from server.realtime.ids import MessageIds
from server.realtime.presence import Presence
from server.realtime.recent import RecentMessages, frame_fields, message_fields

log = logging.getLogger("mservices.chat")

HISTORY_ON_JOIN = 50
RESUME_LIMIT = 200
FILL_LIMIT = 1_000
"""The most messages a room gets from one fill (the newest; an older gap is logged)."""
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
        bus.recover_with(self.fill, self.unstored)

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
        self.history.record(message)
        await self.publish_stored(message)
        return message.id

    async def publish_stored(self, message: StoredMessage) -> None:
        """Publish a message whose id was minted here (``ids``) and that is stored or queued
        for storage: ``say``'s messages, and a support thread's, which is stored with the
        thread's change before it is published (``server/support.py``)."""
        self.said += 1
        room = message.room
        await self.bus.publish(room, encode("message", room, **message_fields(message)))

    async def resync(self) -> None:
        """Publish who is online now in every room with a member here, as a ``presence`` frame
        to every process's members of that room.

        The bus awaits this after it (re)subscribes, once presence has written this process's
        users back: joins and leaves published during an outage were lost, so members here and
        elsewhere may hold a stale online list. Rooms are refreshed one by one; a failure is
        left to the caller (the bus logs it and the next resubscription tries again).

        Rooms in memory are kept: the messages this process missed are filled in (``fill``).
        """
        for room in self.rooms():
            users = await self.presence.online(room)
            await self.bus.publish(room, encode("presence", room, users=users))

    async def online(self, room: str) -> list[str]:
        """Who is in ``room`` (every process)."""
        return await self.presence.online(room)

    async def fill(self, after_id: int, unstored: Frames) -> None:
        """Deliver to the members here every message of their rooms after ``after_id`` that
        this process has not delivered, in id order: from history, plus ``unstored`` (what the
        other processes have not stored yet). The Redis bus awaits this after it resubscribes,
        while it holds live frames (``redis_bus.py``); a message delivered before is dropped by
        ``deliver``. At most FILL_LIMIT messages a room (the newest); the rest is logged."""
        rooms = self.rooms()
        missed: dict[str, dict[int, str]] = {room: {} for room in rooms}
        for room, payload in unstored:
            found = missed.get(room)
            fields = frame_fields(payload) if found is not None else None
            if found is not None and fields is not None:
                found[fields["id"]] = payload
        for room in rooms:
            after = max(after_id, self.recent.forgotten(room))
            stored = await self.history.recent(room, limit=FILL_LIMIT + 1, after_id=after)
            if len(stored) > FILL_LIMIT:
                log.warning(
                    "chat fill of %r: the last %d messages only, id %d and older left out",
                    room,
                    FILL_LIMIT,
                    stored[0].id,
                )
            found = missed[room]
            for message in stored[-FILL_LIMIT:]:
                if message.id not in found:
                    found[message.id] = encode("message", room, **message_fields(message))
            before = self.delivered
            for message_id in sorted(key for key in found if key > after):
                self.deliver(room, found[message_id])
            if self.delivered > before:
                log.info(
                    "chat fill of %r: %d deliveries missed meanwhile", room, self.delivered - before
                )

    def unstored(self, after_id: int) -> Frames:
        """This process's messages after ``after_id`` still queued for storage, as message
        frames: the answer to another process filling its rooms (``redis_bus.py``)."""
        return [
            (message.room, encode("message", message.room, **message_fields(message)))
            for message in self.history.queued(after_id)
        ]

    def deliver(self, room: str, payload: str) -> None:
        """Hand an encoded frame to every local member of ``room`` (called by the bus), and
        remember it when it is a message of a room in memory; a message this process
        delivered already (it may come again after an outage) is dropped."""
        if not self.recent.remember(room, payload):
            return
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

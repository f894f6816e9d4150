"""The hub: rooms, presence, history and fan-out, knowing nothing of WebSocket or TCP.

A member is anything with a ``user`` and a non-blocking ``send(payload)``; each frame is encoded
once and the same string is handed to every member of the room (each member queues it and
writes it at its own pace).
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


def message_fields(message: StoredMessage) -> dict[str, Any]:
    """The frame fields of a stored message."""
    return {
        "user": message.user,
        "text": message.text,
        "ts": message.created_at.timestamp(),
        "id": message.id,
    }


class Hub:
    """All rooms of this process, connected to the others through the bus."""

    def __init__(
        self, bus: Bus, presence: Presence, history: ChatHistory, ids: MessageIds | None = None
    ) -> None:
        self.bus = bus
        self.presence = presence
        self.history = history
        self.ids = ids or MessageIds()
        self._rooms: dict[str, set[Member]] = {}
        self.delivered = 0
        bus.subscribe(self.deliver)

    async def join(self, member: Member, room: str, *, last_id: int | None = None) -> None:
        """Add ``member`` to ``room``: send it history (or what it missed since ``last_id``) and
        who is online; announce the user when this is their first connection there."""
        members = self._rooms.setdefault(room, set())
        members.add(member)
        try:
            if last_id is None:
                messages = await self.history.recent(room, limit=HISTORY_ON_JOIN)
                recovered = True
            else:
                messages = await self.history.recent(room, limit=RESUME_LIMIT + 1, after_id=last_id)
                recovered = len(messages) <= RESUME_LIMIT
                messages = messages[-RESUME_LIMIT:]
            member.send(
                encode(
                    "history",
                    room,
                    messages=[message_fields(message) for message in messages],
                    recovered=recovered,
                )
            )
        except BaseException:
            # Not joined after all: never counted in presence, so leave() must not find it.
            members.discard(member)
            if not members:
                self._rooms.pop(room, None)
            raise
        if await self.presence.join(room, member.user):
            await self.bus.publish(room, encode("join", room, user=member.user, ts=time.time()))
        member.send(encode("presence", room, users=await self.presence.online(room)))

    async def leave(self, member: Member, room: str) -> None:
        """Remove ``member``; announce the user when it was their last connection there."""
        members = self._rooms.get(room)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self._rooms[room]
        if await self.presence.leave(room, member.user):
            await self.bus.publish(room, encode("leave", room, user=member.user, ts=time.time()))

    async def say(self, user: str, room: str, text: str) -> int:
        """Publish ``text`` from ``user`` to ``room``; returns the message id. Storage happens in
        the background and never delays delivery."""
        message = StoredMessage(
            id=self.ids.next(), room=room, user=user, text=text, created_at=utcnow()
        )
        self.history.record(message)
        await self.bus.publish(room, encode("message", room, **message_fields(message)))
        return message.id

    async def online(self, room: str) -> list[str]:
        """Who is in ``room`` (every process)."""
        return await self.presence.online(room)

    def deliver(self, room: str, payload: str) -> None:
        """Hand an encoded frame to every local member of ``room`` (called by the bus)."""
        for member in list(self._rooms.get(room, ())):
            member.send(payload)
            self.delivered += 1

    def members(self, room: str) -> Iterable[Member]:
        """This process's members of ``room``."""
        return tuple(self._rooms.get(room, ()))

    def rooms(self) -> list[str]:
        """Rooms with at least one local member."""
        return sorted(self._rooms)

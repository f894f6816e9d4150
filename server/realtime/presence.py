"""Presence: who is in a room, counted by user rather than by connection.

``join`` says whether this was the user's first connection to the room and ``leave`` whether it
was the last, so join and leave are announced once per user, however many tabs they open.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class Presence(Protocol):
    """Counts connections per (room, user)."""

    async def join(self, room: str, user: str) -> bool:
        """Count one more connection; True when it is the user's first in the room."""

    async def leave(self, room: str, user: str) -> bool:
        """Count one connection less; True when it was the user's last in the room."""

    async def online(self, room: str) -> list[str]:
        """The users in the room, sorted."""


class LocalPresence:
    """Presence of a single process."""

    def __init__(self) -> None:
        self._rooms: dict[str, Counter[str]] = {}

    async def join(self, room: str, user: str) -> bool:
        """See Presence."""
        counts = self._rooms.setdefault(room, Counter())
        counts[user] += 1
        return counts[user] == 1

    async def leave(self, room: str, user: str) -> bool:
        """See Presence."""
        counts = self._rooms.get(room)
        if counts is None or counts[user] <= 0:
            return False
        counts[user] -= 1
        if counts[user] == 0:
            del counts[user]
            if not counts:
                del self._rooms[room]
            return True
        return False

    async def online(self, room: str) -> list[str]:
        """See Presence."""
        return sorted(self._rooms.get(room, ()))

"""The chat bus: how an encoded frame for a room reaches every process's hub.

``LocalBus`` (one process) hands frames straight back; a Redis implementation (several
processes, ``redis_bus.py``) publishes them on a channel every process subscribes to, and after
each resubscription has the hub fill in the messages it may have missed (``recover_with``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Deliver = Callable[[str, str], None]
"""Called with (room, encoded frame) for every frame published by any process."""

Frames = list[tuple[str, str]]
"""(room, encoded frame) pairs."""

Fill = Callable[[int, Frames], Awaitable[None]]
"""The hub's ``fill(after_id, unstored)``: deliver every message of its rooms after ``after_id``
it has not delivered yet, read from history, plus ``unstored`` (message frames the other
processes have not stored yet)."""

Unstored = Callable[[int], Frames]
"""The hub's ``unstored(after_id)``: this process's messages after ``after_id`` that are still
queued for storage, as message frames."""


class Bus(Protocol):
    """Carries frames between the hubs of all processes."""

    def subscribe(self, deliver: Deliver) -> None:
        """Call ``deliver`` for every frame (this process's own included)."""

    async def publish(self, room: str, payload: str) -> None:
        """Send ``payload`` to every process's subscribers of ``room``."""

    def recover_with(self, fill: Fill, unstored: Unstored) -> None:
        """Use ``fill`` to make up for what a resubscription may have missed, and ``unstored``
        to answer another process doing so."""

    async def start(self) -> None:
        """Begin receiving."""

    async def close(self) -> None:
        """Stop receiving."""


class LocalBus:
    """The single-process bus: publishing is delivering."""

    def __init__(self) -> None:
        self._subscribers: list[Deliver] = []

    def subscribe(self, deliver: Deliver) -> None:
        """See Bus."""
        self._subscribers.append(deliver)

    async def publish(self, room: str, payload: str) -> None:
        """See Bus."""
        for deliver in self._subscribers:
            deliver(room, payload)

    def recover_with(self, fill: Fill, unstored: Unstored) -> None:
        """See Bus: one process never misses a frame."""

    async def start(self) -> None:
        """See Bus."""

    async def close(self) -> None:
        """See Bus."""

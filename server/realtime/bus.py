"""The chat bus: how an encoded frame for a room reaches every process's hub.

``LocalBus`` (one process) hands frames straight back; a Redis implementation (several
processes) publishes them on a channel every process subscribes to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Deliver = Callable[[str, str], None]
"""Called with (room, encoded frame) for every frame published by any process."""


class Bus(Protocol):
    """Carries frames between the hubs of all processes."""

    def subscribe(self, deliver: Deliver) -> None:
        """Call ``deliver`` for every frame (this process's own included)."""

    async def publish(self, room: str, payload: str) -> None:
        """Send ``payload`` to every process's subscribers of ``room``."""

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

    async def start(self) -> None:
        """See Bus."""

    async def close(self) -> None:
        """See Bus."""

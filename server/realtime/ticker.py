"""The ticker WebSocket ``/ticker``: the seed's ``MessageOlderHandler`` without blocking the loop.

The seed slept with ``time.sleep`` inside ``open``, so one ticker froze the whole server for ten
seconds. Here the sequence (``您好！<ip>``, ``starting``, ten random numbers from 100 to 1000 one
second apart, ``end``) runs in a task that awaits ``asyncio.sleep`` and each write, so every
other request is answered while tickers run. The socket closes normally (1000) after ``end``.
The page that shows it is ``/ticker/page``.
"""

from __future__ import annotations

import asyncio
import secrets

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from server.permissions import Requirement
from server.realtime.websocket import handshake_abandoned, open_sockets, site_origin_allowed
from server.services import Services

TICKS = 10
LOWEST = 100
HIGHEST = 1000
MAX_CLIENT_FRAME_BYTES = 4 * 1024
"""The ticker only talks; whatever a client sends is ignored, and kept small."""


def tick_number() -> int:
    """A random number from LOWEST to HIGHEST, both included."""
    return LOWEST + secrets.randbelow(HIGHEST - LOWEST + 1)


class TickerSocketHandler(WebSocketHandler):
    """``/ticker``: greet the client's IP, count ten random numbers, say ``end`` and close."""

    tick_seconds: float = 1.0
    """Seconds between numbers (tests shorten it)."""

    def initialize(self, services: Services, need: Requirement) -> None:
        """Receive the process's services (route kwargs); the ticker is ``PUBLIC``."""
        self.services = services
        self._sockets = open_sockets(services)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def check_origin(self, origin: str) -> bool:
        """The site's own origin and ``settings.ws_origins``; Tornado answers 403 otherwise."""
        return site_origin_allowed(self, self.services.settings, origin)

    @property
    def max_message_size(self) -> int:
        """Client frames are ignored; refuse big ones (1009)."""
        return MAX_CLIENT_FRAME_BYTES

    def open(self) -> None:
        """Start the sequence in its own task, so closing the socket can cancel it; nothing
        when the client left during the handshake or the process is shutting down (1001)."""
        if self._closed or handshake_abandoned(self) or not self._sockets.add(self):
            return
        self._task = asyncio.ensure_future(self._tick())

    def on_message(self, message: str | bytes) -> None:
        """Ignore what the client sends."""

    def on_close(self) -> None:
        """Stop the sequence."""
        self._closed = True
        self._sockets.discard(self)
        if self._task is not None:
            self._task.cancel()

    async def _tick(self) -> None:
        try:
            await self.write_message(f"您好！{self.request.remote_ip}")
            await self.write_message("starting")
            for _ in range(TICKS):
                await asyncio.sleep(self.tick_seconds)
                await self.write_message(str(tick_number()))
            await self.write_message("end")
        except WebSocketClosedError:
            return
        self.close(1000, "end")

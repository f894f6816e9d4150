"""Keep-alive pings for every chat socket of a process from one task.

Tornado pings each WebSocket from a task of its own (a coroutine, its frame and a timer per
connection: about 1.8 KB an idle socket). ``SocketPings`` does the same job for all chat
sockets at once: every ``interval`` seconds it closes the sockets that have not answered the
previous ping and pings the others; a pong marks a socket as alive. The task runs only while
there are sockets to ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from tornado.websocket import WebSocketClosedError

from server.logs import detached

log = logging.getLogger("mservices.chat")

PING_INTERVAL = 25.0
"""Seconds between pings; a socket silent for a whole interval after a ping is closed."""
CLOSE_NORMAL = 1000


class Pingable(Protocol):
    """An open WebSocket that can be pinged and closed."""

    def ping(self, data: str | bytes = b"") -> None:
        """Send a ping frame."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake with ``code``."""


class SocketPings:
    """The chat sockets of one process, pinged together every ``interval`` seconds."""

    def __init__(self, interval: float = PING_INTERVAL) -> None:
        self.interval = interval
        self._waiting: dict[Pingable, bool] = {}
        """Every socket, and whether it owes a pong for the last ping."""
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, socket: Pingable) -> None:
        """Ping ``socket`` from now on (starts the task with the first socket)."""
        self._waiting[socket] = False
        if self._task is None and self.interval > 0:
            # The first socket's handshake starts it, but it serves the whole process: its
            # lines must not carry that request's id.
            self._task = detached(asyncio.ensure_future, self._run())

    def discard(self, socket: Pingable) -> None:
        """Stop pinging ``socket`` (closed); the task stops with the last socket."""
        self._waiting.pop(socket, None)
        if not self._waiting and self._task is not None:
            self._task.cancel()
            self._task = None

    def pong(self, socket: Pingable) -> None:
        """``socket`` answered: it is alive."""
        if socket in self._waiting:
            self._waiting[socket] = False

    def sweep(self) -> int:
        """Close every socket that owes a pong, ping the others; returns how many closed."""
        silent = 0
        for socket, waiting in list(self._waiting.items()):
            try:
                if waiting:
                    silent += 1
                    self.discard(socket)
                    socket.close(CLOSE_NORMAL, "ping timed out")
                else:
                    self._waiting[socket] = True
                    socket.ping()
            except WebSocketClosedError:
                self.discard(socket)  # closing already: on_close follows
            except Exception:  # one broken socket must not stop the others' pings
                log.warning("pinging a chat socket failed", exc_info=True)
        return silent

    async def close(self) -> None:
        """Stop the task (sockets are closed by their own shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sweep()

"""The chat sockets of each browser session, so a session that ends closes them at once.

A chat WebSocket authenticates once, before the upgrade; without this, a socket opened before a
logout would keep chatting as that user until it dropped. ``SessionSockets`` listens to the
invalidation events: a ``token`` event (logout, a revoked session, a password change or an
account closure revoking the others, an administrator revoking sessions) closes every socket of
this process opened with that token, with CLOSE_SESSION_ENDED (4001). Events of other processes
arrive through Redis like every other invalidation. An ``all`` event (after the invalidation
channel was lost) closes nothing: it says that events may be missing, not which.
"""

from __future__ import annotations

import logging
from typing import Protocol

from server.invalidation import Event

log = logging.getLogger("mservices.chat")

CLOSE_SESSION_ENDED = 4001
"""The close code of a socket whose session was logged out or revoked."""


class ClosableSocket(Protocol):
    """An open WebSocket that can be closed."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake with ``code``."""


class SessionSockets:
    """This process's open chat sockets by the token hash of the session that opened them."""

    def __init__(self) -> None:
        self._by_token: dict[str, set[ClosableSocket]] = {}

    def add(self, token_hash: str, socket: ClosableSocket) -> None:
        """Track ``socket``, opened by the session whose token hashes to ``token_hash``."""
        self._by_token.setdefault(token_hash, set()).add(socket)

    def discard(self, token_hash: str, socket: ClosableSocket) -> None:
        """Forget a closed socket."""
        sockets = self._by_token.get(token_hash)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._by_token[token_hash]

    def __len__(self) -> int:
        return sum(len(sockets) for sockets in self._by_token.values())

    def on_event(self, event: Event) -> None:
        """Close the sockets of a revoked token (an invalidation listener)."""
        if event.kind != "token":
            return
        for socket in self._by_token.pop(event.key, ()):
            try:
                socket.close(CLOSE_SESSION_ENDED, "session ended")
            except Exception:  # one broken socket must not keep the others open
                log.warning("closing the socket of an ended session failed", exc_info=True)

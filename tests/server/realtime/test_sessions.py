"""SessionSockets: a revoked session's chat sockets are closed with 4001, nobody else's.

The sockets here are stand-ins that record how they were closed; the real WebSocket path
(logout and revocation closing a browser's socket) is tested in test_websocket.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from server.invalidation import Event
from server.realtime.sessions import CLOSE_SESSION_ENDED, SessionSockets


@dataclass(eq=False)
class RecordingSocket:
    """Keeps the close codes it was given; ``broken`` ones fail to close."""

    broken: bool = False
    closes: list[int | None] = field(default_factory=list)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Record ``code`` (or fail, when broken)."""
        if self.broken:
            raise RuntimeError("socket bug")
        self.closes.append(code)


def test_a_token_event_closes_every_socket_of_that_token_and_only_those() -> None:
    sessions = SessionSockets()
    tab, other_tab, stranger = RecordingSocket(), RecordingSocket(), RecordingSocket()
    sessions.add("hash-a", tab)
    sessions.add("hash-a", other_tab)
    sessions.add("hash-b", stranger)

    sessions.on_event(Event("token", "hash-a"))

    assert tab.closes == other_tab.closes == [CLOSE_SESSION_ENDED] == [4001]
    assert stranger.closes == []
    assert len(sessions) == 1
    sessions.on_event(Event("token", "hash-a"))  # a repeated event finds nothing left
    assert tab.closes == [4001]


@pytest.mark.parametrize("kind", ["user", "menus", "roles", "all"])
def test_other_events_close_nothing(kind: str) -> None:
    sessions = SessionSockets()
    socket = RecordingSocket()
    sessions.add("hash-a", socket)
    sessions.on_event(Event(kind, "hash-a"))  # type: ignore[arg-type]
    assert socket.closes == []
    assert len(sessions) == 1


def test_a_discarded_socket_is_not_closed_and_discarding_twice_is_harmless() -> None:
    sessions = SessionSockets()
    gone, open_one = RecordingSocket(), RecordingSocket()
    sessions.add("hash-a", gone)
    sessions.add("hash-a", open_one)
    sessions.discard("hash-a", gone)
    sessions.discard("hash-a", gone)
    sessions.discard("unknown", gone)
    sessions.on_event(Event("token", "hash-a"))
    assert gone.closes == []
    assert open_one.closes == [4001]
    assert len(sessions) == 0


def test_a_socket_that_fails_to_close_does_not_keep_the_others_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sessions = SessionSockets()
    broken, fine = RecordingSocket(broken=True), RecordingSocket()
    sessions.add("hash-a", broken)
    sessions.add("hash-a", fine)
    sessions.on_event(Event("token", "hash-a"))
    assert fine.closes == [4001]
    assert "closing the socket of an ended session failed" in caplog.text

"""One ping task for every chat socket: who is pinged, who is closed for staying silent, and
when the task runs. Sockets here are fakes that record calls; the real chat socket answering
pings is in ``test_websocket.py``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tornado.websocket import WebSocketClosedError

from server.realtime.pings import CLOSE_NORMAL, SocketPings


@dataclass(eq=False)
class FakeSocket:
    """A socket that records its pings and its close."""

    pings: int = 0
    closed: list[tuple[int | None, str | None]] = field(default_factory=list)
    gone: bool = False
    """Closing already: a ping raises as Tornado's does."""
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def ping(self, data: str | bytes = b"") -> None:
        """Count the ping."""
        if self.gone:
            raise WebSocketClosedError()
        self.pings += 1

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Record the close."""
        self.closed.append((code, reason))
        self.closing.set()


async def test_a_sweep_pings_every_socket_and_a_pong_keeps_it_open() -> None:
    pings = SocketPings()
    alive, other = FakeSocket(), FakeSocket()
    pings.add(alive)
    pings.add(other)

    assert pings.sweep() == 0
    pings.pong(alive)
    pings.pong(other)
    assert pings.sweep() == 0

    assert (alive.pings, other.pings) == (2, 2)
    assert alive.closed == other.closed == []
    await pings.close()


async def test_a_socket_silent_for_a_whole_interval_is_closed_and_forgotten() -> None:
    pings = SocketPings()
    silent, alive = FakeSocket(), FakeSocket()
    pings.add(silent)
    pings.add(alive)
    pings.sweep()
    pings.pong(alive)

    assert pings.sweep() == 1

    assert silent.closed == [(CLOSE_NORMAL, "ping timed out")]
    assert alive.closed == []
    assert len(pings) == 1
    await pings.close()


async def test_a_socket_closing_already_is_forgotten_without_error() -> None:
    pings = SocketPings()
    socket = FakeSocket(gone=True)
    pings.add(socket)

    assert pings.sweep() == 0

    assert len(pings) == 0 and socket.closed == []


async def test_the_task_runs_only_while_there_are_sockets() -> None:
    pings = SocketPings()
    first, second = FakeSocket(), FakeSocket()
    assert pings._task is None

    pings.add(first)
    pings.add(second)
    task = pings._task
    assert task is not None and not task.done()
    pings.discard(first)
    assert pings._task is task
    pings.discard(second)

    assert pings._task is None and task.cancelling()
    pings.pong(second)  # a late pong of a closed socket changes nothing
    assert len(pings) == 0


async def test_no_task_is_started_when_pings_are_off() -> None:
    pings = SocketPings(interval=0)
    pings.add(FakeSocket())

    assert pings._task is None


async def test_the_task_sweeps_every_interval() -> None:
    pings = SocketPings(interval=0.01)
    socket = FakeSocket()
    pings.add(socket)

    await asyncio.wait_for(socket.closing.wait(), 5.0)  # pinged, never answered, closed

    assert socket.pings == 1
    assert socket.closed == [(CLOSE_NORMAL, "ping timed out")]
    assert pings._task is None

"""The ticker WebSocket ``/ticker`` (the seed's ``MessageOlderHandler``): its sequence, and the
point of rewriting it: while tickers run, every other request is answered at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import IOStream
from tornado.web import Application
from tornado.websocket import WebSocketClientConnection, websocket_connect

from server.permissions import PUBLIC, Requirement, route
from server.realtime.ticker import HIGHEST, LOWEST, TICKS, TickerSocketHandler, tick_number
from server.realtime.websocket import open_sockets
from server.services import Services
from tests.conftest import Client, serve_app
from tests.server.realtime.conftest import Calls, Gate, drop_during_handshake

WAIT = 5.0

Connect = Callable[..., Awaitable[WebSocketClientConnection]]


@pytest.fixture
async def connect(client: Client) -> AsyncIterator[Connect]:
    """Open ``/ticker`` (own origin unless told); connections are closed after the test."""
    opened: list[tuple[WebSocketClientConnection, IOStream]] = []

    async def open_ticker(origin: str | None = None) -> WebSocketClientConnection:
        url = "ws" + client.base_url.removeprefix("http") + "/ticker"
        request = HTTPRequest(
            url, headers={"Origin": origin or client.base_url}, request_timeout=WAIT
        )
        connection = await asyncio.wait_for(websocket_connect(request), WAIT)
        assert connection.protocol is not None and connection.protocol.stream is not None
        opened.append((connection, connection.protocol.stream))
        return connection

    try:
        yield open_ticker
    finally:
        for connection, _ in opened:
            connection.close()
        deadline = asyncio.get_running_loop().time() + WAIT
        for connection, stream in opened:
            while not stream.closed() and asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(connection.read_message(), 0.05)


async def read_all(connection: WebSocketClientConnection, frames: list[str]) -> int | None:
    """Append every frame to ``frames`` until the server closes; returns the close code."""
    while True:
        message = await asyncio.wait_for(connection.read_message(), WAIT)
        if message is None:
            return connection.close_code
        assert isinstance(message, str)
        frames.append(message)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def numbers_in(frames: list[str]) -> list[int]:
    """The numbers among the ticker's frames."""
    return [int(frame) for frame in frames if frame.isdigit()]


async def test_the_ticker_greets_the_client_counts_ten_numbers_and_ends(
    monkeypatch: pytest.MonkeyPatch, connect: Connect
) -> None:
    assert TickerSocketHandler.tick_seconds == 1.0, "the seed's pace: one number a second"
    monkeypatch.setattr(TickerSocketHandler, "tick_seconds", 0.01)
    frames: list[str] = []

    code = await read_all(await connect(), frames)

    assert frames[:2] == ["您好！127.0.0.1", "starting"]
    assert frames[-1] == "end"
    numbers = numbers_in(frames)
    assert len(numbers) == TICKS == len(frames) - 3
    assert all(LOWEST <= number <= HIGHEST for number in numbers)
    assert code == 1000


def test_tick_numbers_cover_100_to_1000() -> None:
    seen = {tick_number() for _ in range(20_000)}
    assert min(seen) == LOWEST and max(seen) == HIGHEST


async def test_other_requests_are_answered_while_tickers_run(
    monkeypatch: pytest.MonkeyPatch, client: Client, connect: Connect
) -> None:
    monkeypatch.setattr(TickerSocketHandler, "tick_seconds", 0.25)
    streams: list[list[str]] = [[], [], []]
    readers = [asyncio.ensure_future(read_all(await connect(), frames)) for frames in streams]

    await eventually(
        lambda: min(len(numbers_in(frames)) for frames in streams) >= 3, "three numbers each"
    )
    health = await client.get("/healthz")
    seen_when_answered = [len(numbers_in(frames)) for frames in streams]
    codes = await asyncio.wait_for(asyncio.gather(*readers), WAIT)

    assert health.status == 200
    # Answered after each ticker's third number and before its last: mid-way, not after.
    assert all(3 <= seen < TICKS for seen in seen_when_answered), seen_when_answered
    assert all(len(numbers_in(frames)) == TICKS for frames in streams)
    assert codes == [1000, 1000, 1000]


async def test_a_ticker_closed_by_the_client_stops(
    monkeypatch: pytest.MonkeyPatch, services: Services, connect: Connect
) -> None:
    monkeypatch.setattr(TickerSocketHandler, "tick_seconds", 30.0)
    connection = await connect()
    assert await asyncio.wait_for(connection.read_message(), WAIT) == "您好！127.0.0.1"
    registry = open_sockets(services)
    assert len(registry) == 1

    connection.close()
    await eventually(lambda: len(registry) == 0, "the ticker to stop")


async def test_close_all_closes_a_running_ticker_with_1001(
    monkeypatch: pytest.MonkeyPatch, services: Services, connect: Connect
) -> None:
    monkeypatch.setattr(TickerSocketHandler, "tick_seconds", 30.0)
    connection = await connect()
    frames: list[str] = []
    reader = asyncio.ensure_future(read_all(connection, frames))
    await eventually(lambda: len(frames) == 2, "the greeting and starting")

    closed = await open_sockets(services).close_all(1001)

    assert closed == 1
    assert await asyncio.wait_for(reader, WAIT) == 1001
    assert frames == ["您好！127.0.0.1", "starting"]


async def test_the_ticker_refuses_a_foreign_origin_with_403(connect: Connect) -> None:
    with pytest.raises(HTTPClientError) as refused:
        await connect(origin="http://evil.example")
    assert refused.value.code == 403


async def test_a_ticker_opened_after_close_all_is_closed_with_1001_at_once(
    monkeypatch: pytest.MonkeyPatch, services: Services, connect: Connect
) -> None:
    monkeypatch.setattr(TickerSocketHandler, "tick_seconds", 0.0)
    registry = open_sockets(services)
    assert await asyncio.wait_for(registry.close_all(1001, stopping=True), WAIT) == 0

    connection = await connect()  # a kept-alive connection can still upgrade during shutdown
    frames: list[str] = []

    assert await read_all(connection, frames) == 1001
    assert frames == []
    await eventually(lambda: len(registry) == 0, "the ticker to be forgotten")


class HeldTicker(TickerSocketHandler):
    """The ticker with a ``prepare`` that waits at a gate, as an authenticating handler does;
    ``open`` and ``on_close`` are recorded (and still run)."""

    def initialize(  # type: ignore[override]
        self, services: Services, need: Requirement, gate: Gate, calls: Calls
    ) -> None:
        """Receive the services, the route's requirement, the gate and the record."""
        super().initialize(services, need)
        self.gate, self.calls = gate, calls

    async def prepare(self) -> None:
        """Wait at the gate."""
        await self.gate.passage()

    def open(self) -> None:
        """Record, then the ticker's own ``open``."""
        super().open()
        self.calls.order.append("open")
        self.calls.opened.set()

    def on_close(self) -> None:
        """Record, then the ticker's own ``on_close``."""
        super().on_close()
        self.calls.order.append("on_close")
        self.calls.closed.set()


async def test_a_ticker_whose_client_dropped_before_open_starts_nothing(
    services: Services,
) -> None:
    gate, calls = Gate(), Calls()
    held = route(
        "/held",
        HeldTicker,
        {"services": services},
        name="held",
        need=PUBLIC,
        gate=gate,
        calls=calls,
    )
    server, base_url = await serve_app(Application([held]))
    try:
        await drop_during_handshake(base_url, "/held", gate)
        await asyncio.wait_for(calls.closed.wait(), WAIT)
        gate.release.set()
        await asyncio.wait_for(calls.opened.wait(), WAIT)
    finally:
        server.stop()
        await server.close_all_connections()

    assert calls.order == ["on_close", "open"]
    assert len(open_sockets(services)) == 0


async def test_close_all_without_stopping_lets_later_tickers_run(
    monkeypatch: pytest.MonkeyPatch, services: Services, connect: Connect
) -> None:
    monkeypatch.setattr(TickerSocketHandler, "tick_seconds", 0.0)
    await asyncio.wait_for(open_sockets(services).close_all(1012), WAIT)

    frames: list[str] = []
    assert await read_all(await connect(), frames) == 1000
    assert frames[-1] == "end" and len(numbers_in(frames)) == TICKS

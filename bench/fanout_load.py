"""The fan-out load generator: ``python -m bench.fanout_load CONFIG_JSON``, one JSON line out.

Run as its own process (pinned to the load core by ``bench/fanout.py``) so it never shares a core
with the server it measures. To get as many deliveries a second as possible out of one Python
core, the client is a minimal WebSocket over ``asyncio.Protocol``: one handshake, then frames are
parsed straight from the receive buffer, one clock reading per read, no per-frame objects.

Two modes:

- ``fanout``: ``clients`` connections (spread round-robin over the endpoints) join the room;
  ``senders`` of them send ``rate`` messages a second in all, evenly staggered, for
  ``duration_s``; each text carries its send time (``fanout#<time.time()>#``), so a delivery's
  latency is its receive time minus that, on the same clock. After the last send the receivers
  get up to ``drain_s`` to catch up.
- ``idle``: open ``warmup`` connections, read the server's RSS (``/proc/PID/status`` VmRSS), open
  ``clients`` more that stay idle, wait ``settle_s``, read it again.
"""

import asyncio
import base64
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MARKER = b"fanout#"
CONNECT_TIMEOUT_S = 15.0
CONNECT_CONCURRENCY = 50
_OPCODE_TEXT = 0x1
_OPCODE_CLOSE = 0x8
_OPCODE_PING = 0x9
_OPCODE_PONG = 0xA


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (``fraction`` in [0, 1]); None when empty.

    ``values`` need not be sorted. The nearest rank is the smallest value with at least
    ``fraction`` of all values at or below it, so p100 is the maximum and p0 the minimum.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def sent_time(frame: bytes | bytearray, start: int = 0, end: int | None = None) -> float | None:
    """The send time carried by a frame's ``fanout#<seconds>#`` text, or None without one."""
    stop = len(frame) if end is None else end
    at = frame.find(MARKER, start, stop)
    if at < 0:
        return None
    begin = at + len(MARKER)
    close = frame.find(b"#", begin, stop)
    if close < 0:
        return None
    try:
        return float(frame[begin:close])
    except ValueError:
        return None


def mask_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """A final client frame: clients must mask what they send (RFC 6455 §5.3)."""
    header = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        header += bytes([0x80 | size])
    elif size < 1 << 16:
        header += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return header + key + masked


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects: a server's address, the socket path and what it must send
    (the session cookie; the subprotocol to offer, mservices' JSON frames)."""

    host: str
    port: int
    path: str
    cookie: str = ""
    protocol: str = ""

    def handshake(self) -> bytes:
        """The upgrade request, with the server's own origin (what a browser on the site sends)."""
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: http://{self.host}:{self.port}",
        ]
        if self.cookie:
            lines.append(f"Cookie: {self.cookie}")
        if self.protocol:
            lines.append(f"Sec-WebSocket-Protocol: {self.protocol}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Deliveries:
    """What every receiver saw, shared by all clients of the process."""

    prefix: bytes
    """Only frames starting with this count (mservices: ``{"type":"message"``; the peer: any)."""
    latencies: list[float] = field(default_factory=list)
    last_receive: float = 0.0
    closed: dict[int, int] = field(default_factory=dict)
    expected: float = math.inf
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once ``expected`` deliveries have been seen."""

    def expect(self, count: int) -> None:
        """Set ``complete`` once ``count`` deliveries have arrived (at once if they have)."""
        self.expected = count
        if len(self.latencies) >= count:
            self.complete.set()

    def frame(self, buffer: bytearray, start: int, end: int, now: float) -> None:
        """Record a text frame's delivery latency, if it carries a send time."""
        if self.prefix and not buffer.startswith(self.prefix, start):
            return
        sent = sent_time(buffer, start, end)
        if sent is not None:
            self.latencies.append(now - sent)
            self.last_receive = now
            if len(self.latencies) >= self.expected:
                self.complete.set()


class HandshakeError(RuntimeError):
    """The server did not switch protocols; the message is its status line."""


class Client(asyncio.Protocol):
    """One WebSocket connection: sends masked text frames, counts what it receives."""

    def __init__(self, deliveries: Deliveries, upgraded: asyncio.Future[None]) -> None:
        self.deliveries = deliveries
        self.upgraded = upgraded
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail a pending handshake."""
        if not self.upgraded.done():
            self.upgraded.set_exception(HandshakeError(f"connection lost: {exc}"))

    def send_text(self, text: str) -> None:
        """Send one text frame."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mask_frame(_OPCODE_TEXT, text.encode("utf-8"), os.urandom(4)))

    def close(self) -> None:
        """Drop the connection (no closing handshake: the server must cope with that anyway)."""
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        """Finish the handshake, then parse every complete frame in the buffer."""
        buffer = self._buffer
        buffer += data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")]).decode("latin-1")
            if status.split(" ")[1:2] != ["101"]:
                self.upgraded.set_exception(HandshakeError(status))
                self.close()
                return
            del buffer[: end + 4]
            self._open = True
            self.upgraded.set_result(None)
        self._frames(buffer)

    def _frames(self, buffer: bytearray) -> None:
        now = time.time()  # one reading per read: every frame of a read arrived together
        size = len(buffer)
        pos = 0
        while size - pos >= 2:
            opcode = buffer[pos] & 0x0F
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                start = pos + 4
                length = int.from_bytes(buffer[pos + 2 : start], "big")
            elif length == 127:
                start = pos + 10
                length = int.from_bytes(buffer[pos + 2 : start], "big")
            end = start + length
            if end > size:
                break
            if opcode == _OPCODE_TEXT:
                self.deliveries.frame(buffer, start, end, now)
            elif opcode == _OPCODE_PING and self.transport is not None:
                payload = bytes(buffer[start:end])
                self.transport.write(mask_frame(_OPCODE_PONG, payload, os.urandom(4)))
            elif opcode == _OPCODE_CLOSE:
                code = int.from_bytes(buffer[start : start + 2], "big") if length >= 2 else 1005
                self.deliveries.closed[code] = self.deliveries.closed.get(code, 0) + 1
                self.close()
            pos = end
        if pos:
            del buffer[:pos]


async def connect(endpoint: Endpoint, deliveries: Deliveries) -> Client:
    """Open one WebSocket to ``endpoint``; raise HandshakeError or OSError when refused."""
    loop = asyncio.get_running_loop()
    upgraded: asyncio.Future[None] = loop.create_future()
    _, client = await loop.create_connection(
        lambda: Client(deliveries, upgraded), endpoint.host, endpoint.port
    )
    assert client.transport is not None
    client.transport.write(endpoint.handshake())
    try:
        await asyncio.wait_for(upgraded, CONNECT_TIMEOUT_S)
    except BaseException:
        client.close()
        raise
    return client


async def connect_many(
    endpoints: Sequence[Endpoint], count: int, deliveries: Deliveries
) -> tuple[list[Client], list[str]]:
    """Open ``count`` connections, round-robin over ``endpoints``, a few at a time; return the
    clients that opened and why the others did not."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> Client:
        async with gate:
            return await connect(endpoints[index % len(endpoints)], deliveries)

    outcomes = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    clients = [outcome for outcome in outcomes if isinstance(outcome, Client)]
    failures = [
        f"{type(outcome).__name__}: {outcome}"
        for outcome in outcomes
        if isinstance(outcome, BaseException)
    ]
    return clients, failures


@dataclass
class FanoutResult:
    """One fan-out measurement, as the load process reports it."""

    clients: int
    connect_failures: int
    first_failure: str
    senders: int
    sent: int
    expected: int
    delivered: int
    deliveries_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    load_cpu_share: float
    """CPU seconds the load process used per wall second while measuring (1.0: a full core)."""
    closed_by_server: dict[int, int]


async def _send(client: Client, offset_s: float, interval_s: float, until: float) -> int:
    """Send a timestamped message every ``interval_s`` after ``offset_s`` until ``until``."""
    loop = asyncio.get_running_loop()
    at = loop.time() + offset_s
    sent = 0
    while at < until:
        await asyncio.sleep(max(0.0, at - loop.time()))
        client.send_text(f"fanout#{time.time():.6f}#")
        sent += 1
        at += interval_s
    return sent


async def fanout(config: dict[str, Any]) -> FanoutResult:
    """Run the fan-out mode described by ``config``."""
    endpoints = [Endpoint(**endpoint) for endpoint in config["endpoints"]]
    deliveries = Deliveries(prefix=config["prefix"].encode("utf-8"))
    clients, failures = await connect_many(endpoints, config["clients"], deliveries)
    await asyncio.sleep(config.get("settle_s", 1.0))  # let history and presence frames pass
    senders = clients[: config["senders"]]  # round-robin: senders on every endpoint
    loop = asyncio.get_running_loop()
    sent = 0
    cpu_started, wall_started = time.process_time(), time.time()
    if senders:
        interval = len(senders) / config["rate"]
        until = loop.time() + config["duration_s"]
        counts = await asyncio.gather(
            *(
                _send(sender, index * interval / len(senders), interval, until)
                for index, sender in enumerate(senders)
            )
        )
        sent = sum(counts)
    expected = sent * len(clients)
    deliveries.expect(expected)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(deliveries.complete.wait(), config["drain_s"])
    cpu_share = (time.process_time() - cpu_started) / max(time.time() - wall_started, 1e-9)
    for client in clients:
        client.close()
    latencies = deliveries.latencies
    span = deliveries.last_receive - wall_started
    return FanoutResult(
        clients=len(clients),
        connect_failures=len(failures),
        first_failure=failures[0] if failures else "",
        senders=len(senders),
        sent=sent,
        expected=expected,
        delivered=len(latencies),
        deliveries_per_s=len(latencies) / span if span > 0 else 0.0,
        p50_ms=_ms(percentile(latencies, 0.50)),
        p90_ms=_ms(percentile(latencies, 0.90)),
        p99_ms=_ms(percentile(latencies, 0.99)),
        max_ms=_ms(percentile(latencies, 1.0)),
        load_cpu_share=cpu_share,
        closed_by_server=deliveries.closed,
    )


def rss_kb(pid: int) -> int:
    """The resident set size of process ``pid`` in KB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class IdleResult:
    """RSS of the server before and after ``connections`` idle WebSockets were opened."""

    connections: int
    connect_failures: int
    first_failure: str
    rss_before_kb: int
    rss_after_kb: int
    kb_per_connection: float | None


async def idle(config: dict[str, Any]) -> IdleResult:
    """Run the idle-memory mode described by ``config``."""
    endpoints = [Endpoint(**endpoint) for endpoint in config["endpoints"]]
    deliveries = Deliveries(prefix=b"")
    warm, _ = await connect_many(endpoints, config["warmup"], deliveries)
    await asyncio.sleep(config["settle_s"])
    before = rss_kb(config["pid"])
    clients, failures = await connect_many(endpoints, config["clients"], deliveries)
    await asyncio.sleep(config["settle_s"])
    after = rss_kb(config["pid"])
    for client in [*warm, *clients]:
        client.close()
    return IdleResult(
        connections=len(clients),
        connect_failures=len(failures),
        first_failure=failures[0] if failures else "",
        rss_before_kb=before,
        rss_after_kb=after,
        kb_per_connection=(after - before) / len(clients) if clients else None,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mode named in the JSON config (the only argument); print the result as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.fanout_load CONFIG_JSON", file=sys.stderr)
        return 2
    config = json.loads(args[0])
    result: FanoutResult | IdleResult
    if config["mode"] == "fanout":
        result = asyncio.run(fanout(config))
    else:
        result = asyncio.run(idle(config))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

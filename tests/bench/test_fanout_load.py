"""The fan-out load generator: its helpers, and its WebSocket client against the real peer."""

import os
from typing import Any

import pytest

from bench import chat_peer
from bench.fanout_load import (
    Deliveries,
    Endpoint,
    HandshakeError,
    connect,
    fanout,
    idle,
    mask_frame,
    percentile,
    sent_time,
)
from tests.conftest import serve_app


def test_percentile_is_the_nearest_rank_of_unsorted_values() -> None:
    values = [float(value) for value in range(100, 0, -1)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0


def test_percentile_of_a_few_values_rounds_the_rank_up() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.99) == 2.0


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 0.99) is None


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_percentile_refuses_a_fraction_outside_zero_to_one(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        percentile([1.0], fraction)


def test_sent_time_is_read_from_a_json_or_a_plain_frame() -> None:
    assert sent_time(b'{"type":"message","text":"fanout#12.500000#","id":3}') == 12.5
    assert sent_time("guest 说: fanout#7.25#".encode()) == 7.25


@pytest.mark.parametrize(
    "frame", [b"hello", b"fanout#12.5", b"fanout#not-a-number#", b'{"type":"presence"}']
)
def test_a_frame_without_a_valid_send_time_has_none(frame: bytes) -> None:
    assert sent_time(frame) is None


def test_sent_time_looks_only_inside_the_given_span() -> None:
    buffer = b"fanout#1.0#fanout#2.0#"
    assert sent_time(buffer, 11) == 2.0
    assert sent_time(buffer, 0, 10) is None


def _unmask(frame: bytes, header: int) -> bytes:
    key = frame[header : header + 4]
    return bytes(byte ^ key[index % 4] for index, byte in enumerate(frame[header + 4 :]))


@pytest.mark.parametrize(("size", "header"), [(5, 2), (125, 2), (126, 4), (70_000, 10)])
def test_a_client_frame_is_final_masked_and_sized(size: int, header: int) -> None:
    payload = os.urandom(size)
    frame = mask_frame(0x1, payload, b"\x01\x02\x03\x04")
    assert frame[0] == 0x81
    assert frame[1] & 0x80
    assert len(frame) == header + 4 + size
    assert _unmask(frame, header) == payload


def test_deliveries_count_only_frames_with_the_prefix() -> None:
    deliveries = Deliveries(prefix=b'{"type":"message"')
    history = bytearray(b'{"type":"history","messages":[{"text":"fanout#1.0#"}]}')
    message = bytearray(b'{"type":"message","text":"fanout#1.0#"}')
    deliveries.frame(history, 0, len(history), 3.0)
    deliveries.frame(message, 0, len(message), 3.0)
    assert deliveries.latencies == [2.0]
    assert deliveries.last_receive == 3.0


def test_deliveries_are_complete_once_the_expected_count_arrived() -> None:
    deliveries = Deliveries(prefix=b"")
    frame = bytearray(b"fanout#1.0#")
    deliveries.expect(2)
    deliveries.frame(frame, 0, len(frame), 1.5)
    assert not deliveries.complete.is_set()
    deliveries.frame(frame, 0, len(frame), 1.5)
    assert deliveries.complete.is_set()


def _peer_endpoint(base_url: str, path: str = "/message") -> dict[str, Any]:
    port = int(base_url.rsplit(":", 1)[1])
    return {"host": "127.0.0.1", "port": port, "path": path}


async def test_every_client_receives_every_message_from_the_peer() -> None:
    server, base_url = await serve_app(chat_peer.make_app())
    try:
        result = await fanout(
            {
                "endpoints": [_peer_endpoint(base_url)],
                "prefix": "",
                "clients": 3,
                "senders": 2,
                "rate": 10,
                "duration_s": 0.3,
                "drain_s": 5,
                "settle_s": 0.1,
            }
        )
    finally:
        server.stop()
        await server.close_all_connections()
    assert result.clients == 3
    assert result.connect_failures == 0
    assert result.sent > 0
    assert result.expected == result.sent * 3
    assert result.delivered == result.expected
    assert result.p50_ms is not None
    assert result.closed_by_server == {}


async def test_a_refused_upgrade_is_a_handshake_error() -> None:
    server, base_url = await serve_app(chat_peer.make_app())
    try:
        endpoint = Endpoint(**_peer_endpoint(base_url, "/missing"))
        with pytest.raises(HandshakeError, match="404"):
            await connect(endpoint, Deliveries(prefix=b""))
    finally:
        server.stop()
        await server.close_all_connections()


async def test_failed_connections_are_counted_not_raised() -> None:
    server, base_url = await serve_app(chat_peer.make_app())
    try:
        result = await idle(
            {
                "endpoints": [_peer_endpoint(base_url, "/missing")],
                "clients": 2,
                "warmup": 0,
                "settle_s": 0.0,
                "pid": os.getpid(),
            }
        )
    finally:
        server.stop()
        await server.close_all_connections()
    assert result.connections == 0
    assert result.connect_failures == 2
    assert "404" in result.first_failure
    assert result.kb_per_connection is None

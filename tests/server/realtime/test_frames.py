"""Hand-built server frames: their layout per RFC 6455, and a real Tornado client reading them
back when a server writes them straight to its stream, as the chat socket does."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from tornado.iostream import IOStream
from tornado.web import Application
from tornado.websocket import (
    WebSocketHandler,
    WebSocketProtocol13,
    _WebSocketParams,
    websocket_connect,
)

from server.realtime.frames import FrameOnce, text_frame
from tests.conftest import serve_app

WAIT = 5.0
SIZES = [0, 1, 125, 126, 65_535, 65_536, 200_000]
"""Payload sizes on each side of the 7-, 16- and 64-bit length boundaries."""


def payload_of(size: int) -> str:
    """A text of exactly ``size`` UTF-8 bytes, with multi-byte characters in it."""
    head = "你好" if size >= 6 else ""
    return head + "x" * (size - len(head.encode("utf-8")))


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e" + struct.pack("!H", 126)),
        (65_535, b"\x81\x7e\xff\xff"),
        (65_536, b"\x81\x7f" + struct.pack("!Q", 65_536)),
    ],
)
def test_a_text_frame_is_final_unmasked_and_sized_with_the_shortest_length(
    size: int, header: bytes
) -> None:
    data = payload_of(size).encode("utf-8")

    frame = text_frame(data)

    assert frame == header + data


class FramesHandler(WebSocketHandler):
    """Writes one hand-built frame per size straight to the stream, then closes."""

    def get_compression_options(self) -> None:
        """No compression: the frames carry no RSV bits."""
        return None

    def open(self) -> None:
        """Write every frame at once, the way the chat socket writes a broadcast."""
        assert self.ws_connection is not None and self.ws_connection.stream is not None
        for size in SIZES:
            self.ws_connection.stream.write(text_frame(payload_of(size).encode("utf-8")))
        self.close(1000)


@pytest.fixture
async def frames_url() -> AsyncIterator[str]:
    """The ws:// URL of a server that sends hand-built frames."""
    server, base_url = await serve_app(Application([(r"/frames", FramesHandler)]))
    try:
        yield "ws" + base_url.removeprefix("http") + "/frames"
    finally:
        server.stop()
        await server.close_all_connections()


async def test_a_tornado_client_reads_hand_built_frames_of_every_length(frames_url: str) -> None:
    connection = await asyncio.wait_for(websocket_connect(frames_url), WAIT)
    try:
        received = [await asyncio.wait_for(connection.read_message(), WAIT) for _ in SIZES]
        end = await asyncio.wait_for(connection.read_message(), WAIT)
    finally:
        connection.close()

    assert received == [payload_of(size) for size in SIZES]
    assert end is None and connection.close_code == 1000


def test_frame_once_frames_the_same_payload_once_and_a_new_one_afresh() -> None:
    frames = FrameOnce()
    payload = '{"type":"message","text":"一次"}'

    first = frames(payload)

    assert frames(payload) is first
    assert first == text_frame(payload.encode("utf-8"))
    other = "".join(['{"type":"message","text":"', "一次", '"}'])  # equal, but another string
    assert other == payload and other is not payload
    assert frames(other) == first and frames(other) is not first


@pytest.mark.parametrize("size", SIZES)
async def test_a_text_frame_is_byte_for_byte_what_tornado_writes(size: int) -> None:
    ours, theirs = socket.socketpair()
    writer, reader = IOStream(ours), IOStream(theirs)
    try:
        protocol = WebSocketProtocol13(
            None,  # type: ignore[arg-type]  # only the stream is used to write a frame
            mask_outgoing=False,
            params=_WebSocketParams(compression_options=None),
        )
        protocol.stream = writer
        data = payload_of(size).encode("utf-8")
        expected = text_frame(data)

        await protocol.write_message(payload_of(size))
        written = await asyncio.wait_for(reader.read_bytes(len(expected)), WAIT)

        assert written == expected
    finally:
        writer.close()
        reader.close()

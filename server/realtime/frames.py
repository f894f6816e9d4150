"""Server WebSocket frames built by hand, so a broadcast is framed once for every member.

Tornado frames each ``write_message`` separately (and wraps each write in a task). The chat
writes the same bytes to every member's stream instead: ``text_frame`` builds an RFC 6455
server frame (FIN, opcode 0x1 text, unmasked as server frames are, 7/16/64-bit length) and
``FrameOnce`` remembers the frame of the payload it saw last, so the hub's loop over a room's
members encodes and frames its one payload string once. Compression is never negotiated on
these sockets (``get_compression_options`` returns None), so frames carry no RSV bits.
"""

from __future__ import annotations

import struct

FIN_TEXT = 0x81
"""First byte of a final, uncompressed text frame: FIN (0x80) + opcode 0x1."""
_LENGTH_7 = 125
_LENGTH_16 = 0xFFFF


def text_frame(data: bytes) -> bytes:
    """The server frame carrying the UTF-8 ``data`` as one final text message."""
    size = len(data)
    if size <= _LENGTH_7:
        header = struct.pack("!BB", FIN_TEXT, size)
    elif size <= _LENGTH_16:
        header = struct.pack("!BBH", FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", FIN_TEXT, 127, size)
    return header + data


class FrameOnce:
    """The text frame of the last payload seen: the hub hands one string to every member of a
    room in a row, so the broadcast is encoded and framed once, not once per connection.

    Payloads are compared by identity (the memo holds the last one, so a new string can never
    take its place by accident); a different payload, equal or not, is framed afresh. This is
    the JSON members' memo; ``plain.PlainFrames`` is the plain-text members' (once per language).
    """

    __slots__ = ("_frame", "_text")

    def __init__(self) -> None:
        self._text: str | None = None
        self._frame = b""

    def __call__(self, payload: str) -> bytes:
        """The frame of ``payload`` (built now unless ``payload`` was the last one seen)."""
        if payload is not self._text:
            self._text, self._frame = payload, text_frame(payload.encode("utf-8"))
        return self._frame

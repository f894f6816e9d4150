"""The seed's wire format of the chat WebSocket: plain-text lines, for a client that negotiates
no subprotocol.

Seed §9.2's page (``robbit.html``) opens ``new WebSocket('ws://HOST/message')``, sends what is
typed as it is, and appends every text frame it receives to the page. Such a socket reads one
text frame per line, in the language of its handshake (Chinese by default, so the seed's page
sees exactly the seed's lines; an English reader gets ``NAME says: TEXT``):

- ``message``: ``NAME 说: TEXT``;
- ``history``: one such frame per message, oldest first (nothing for a room without messages);
- ``join`` / ``leave``: ``NAME 进入聊天室`` / ``NAME 离开聊天室``;
- ``error``: its sentence, one line;
- ``presence`` and every other frame: nothing (the seed's page has no online list).

The seed's page adds each frame with ``innerHTML +=``, so every line is HTML-escaped (``&``,
``<`` and ``>``; quotes need nothing in text): for that page, a hostile message stays text, as
it does on mservices' own page. A program reading plain frames sees ``&lt;`` for ``<``;
programs should negotiate ``mservices.chat.v1`` and read JSON instead.

``PlainFrames`` is ``frames.FrameOnce`` for this format: the hub hands one JSON payload to every
member of a room in a row, and the plain members share one memo that turns it into its frames
once per language.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator, Mapping
from typing import Any

from tornado.locale import Locale

from schemas.text import Text
from server.realtime.frames import text_frame


def _escaped(value: object) -> str:
    """``value`` as text safe inside HTML text (what the seed's ``innerHTML +=`` needs)."""
    return html.escape(str(value), quote=False)


def _said(locale: Locale, message: Mapping[str, Any]) -> str:
    return Text(
        "{user} says: {text}",
        user=_escaped(message.get("user", "?")),
        text=_escaped(message.get("text", "")),
    ).translate(locale.translate)


def plain_lines(payload: str, locale: Locale) -> Iterator[str]:
    """The lines a plain-text reader in ``locale``'s language sees for one hub frame (none for
    a frame it has no use for, or one that is not a JSON object)."""
    try:
        frame = json.loads(payload)
    except ValueError:
        return
    if not isinstance(frame, dict):
        return
    match frame.get("type"):
        case "message":
            yield _said(locale, frame)
        case "history":
            for message in frame.get("messages") or ():
                if isinstance(message, dict):
                    yield _said(locale, message)
        case "join":
            user = _escaped(frame.get("user", "?"))
            yield Text("{user} joined the chat room", user=user).translate(locale.translate)
        case "leave":
            user = _escaped(frame.get("user", "?"))
            yield Text("{user} left the chat room", user=user).translate(locale.translate)
        case "error":
            yield _escaped(frame.get("text", ""))


def plain_frames(payload: str, locale: Locale) -> bytes:
    """The server frames of ``payload`` for a plain-text reader in ``locale``'s language, one
    text frame per line, ready to be written at once (empty when there is nothing to show)."""
    return b"".join(text_frame(line.encode("utf-8")) for line in plain_lines(payload, locale))


class PlainFrames:
    """The plain frames of the last payload seen, per language: a broadcast is rendered once
    for each language among the room's plain members, not once per connection.

    Payloads are compared by identity, as ``FrameOnce`` does; a different payload, equal or
    not, starts afresh.
    """

    __slots__ = ("_frames", "_text")

    def __init__(self) -> None:
        self._text: str | None = None
        self._frames: dict[str, bytes] = {}

    def __call__(self, payload: str, locale: Locale) -> bytes:
        """The frames of ``payload`` in ``locale``'s language (rendered now unless ``payload``
        was the last one seen and already rendered in that language)."""
        if payload is not self._text:
            self._text = payload
            self._frames = {}
        frames = self._frames.get(locale.code)
        if frames is None:
            frames = self._frames[locale.code] = plain_frames(payload, locale)
        return frames

"""The chat WebSocket ``/message``: a browser session's connection to one hub room.

The socket authenticates with the signed session cookie before the upgrade (401 without a valid
session) and accepts the site's own origin plus ``settings.ws_origins`` (403 otherwise). Once
open, the handler is a hub ``Member``: ``send`` writes the frame of each payload straight to the
connection's stream (framed once per broadcast for every member, ``frames.py``; no queue, task
or per-message wrapper). Only what the kernel has not taken yet is buffered, at most
SEND_BUFFER_BYTES; a frame that would pass it closes the slow client with 4008. Error frames
and closes go through the same stream, so they keep their order. Compression is never
negotiated (every member gets the same bytes).

Two wire formats share rooms, history, presence and limits, chosen at the handshake by the
``Sec-WebSocket-Protocol`` the client offers: ``mservices.chat.v1`` (CHAT_SUBPROTOCOL, what
mservices' own page negotiates) gets JSON frames, and its client frames are
``{"type": "message", "text": ...}`` or plain text; a client that offers none (the seed's page,
``new WebSocket(url)``) gets the seed's plain-text lines (``plain.py``: ``NAME 说: TEXT``, no
presence) and every text frame it sends is the message itself.

Limits per connection: MAX_FRAME_BYTES per frame (Tornado closes with 1009), and those shared
with the TCP chat (``limits.py``): MAX_TEXT_CHARS per message, and a token bucket of
RATE_PER_SECOND with a burst of RATE_BURST (an error frame per refused message, or line in
plain text; close 1008 after REFUSALS_BEFORE_CLOSE in a row).

The ``text`` of an error frame is a sentence for the person at the page, in the language of the
handshake (the account's choice, else the ``mservices_lang`` cookie, else ``Accept-Language``,
else Chinese), resolved once in ``prepare``; its ``code`` is stable. Close reasons are stable
English tokens for programs (the page explains a close by its code, in its own language).

Private rooms (``rooms.py``: a support conversation ``support-<id>``, the agents' queue
``support-queue``) are checked in ``prepare`` on every handshake, a join or a resume with
``last_id`` alike: a room the user may not enter (or that does not exist) is refused with 403.
What is said there goes through the room policy (a conversation stores it with its change first,
refusing it once closed: an error frame ``closed``; the queue is read-only: ``read_only``).

Every open chat and ticker socket of a process is kept in ``open_sockets(services)`` so the
runtime can close them all with 1001 on SIGTERM; chat sockets are also kept by session in
``services.chat_sessions``, which closes them with 4001 when their session is logged out or
revoked (``sessions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import weakref
from collections.abc import Iterable, Iterator

from tornado.iostream import StreamBufferFullError, StreamClosedError
from tornado.locale import Locale
from tornado.web import HTTPError, RequestHandler
from tornado.websocket import WebSocketHandler

from schemas.text import Text
from server.handlers.base import (
    LANGUAGE_COOKIE,
    MAX_JSON_DEPTH,
    SESSION_COOKIE,
    json_depth_exceeds,
)
from server.i18n import DEFAULT_LANGUAGE, locale_for, negotiate, supported
from server.logins import Login, TokenExpired
from server.logs import bind_request, bind_user, request_id_from
from server.permissions import Requirement
from server.realtime.frames import FrameOnce, text_frame
from server.realtime.hub import DEFAULT_ROOM, Hub, encode
from server.realtime.limits import (
    MAX_TEXT_CHARS,
    RATE_BURST,
    RATE_PER_SECOND,
    REFUSALS_BEFORE_CLOSE,
    ROOM_PATTERN,
    TokenBucket,
)
from server.realtime.pings import PING_INTERVAL as PING_INTERVAL
from server.realtime.plain import PlainFrames, plain_frames
from server.realtime.rooms import Admission, RoomRefused
from server.realtime.sessions import ClosableSocket
from server.services import Services
from server.settings import Settings

log = logging.getLogger("mservices.chat")

MAX_FRAME_BYTES = 64 * 1024
SEND_BUFFER_BYTES = 1024 * 1024
"""Unsent bytes a chat socket may hold before it is closed as a slow consumer (4008): about
what the former queue of 256 frames held at its worst."""

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SLOW_CONSUMER = 4008

LAST_ID_PATTERN = re.compile(r"^[0-9]{1,19}$")
CHAT_SUBPROTOCOL = "mservices.chat.v1"
"""The subprotocol of the JSON frames; a client that offers none gets plain text."""
FRAME_SHAPE = '{"type": "message", "text": "..."}'
"""The JSON object a client frame may be (named in the ``bad_frame`` error's text)."""


# -- the registry of open sockets (closed with 1001 at shutdown) ------------------------------


class OpenSockets:
    """The open chat and ticker sockets of one process."""

    def __init__(self) -> None:
        self._sockets: set[ClosableSocket] = set()
        self._emptied = asyncio.Event()
        self._emptied.set()
        self._closing: tuple[int, str] | None = None
        """The code and reason of the shutdown's ``close_all``: the process is stopping."""

    def add(self, socket: ClosableSocket) -> bool:
        """Track an opened socket; during shutdown (after ``close_all(stopping=True)``) close it
        at once with the same code and return False: its handshake finished too late."""
        self._sockets.add(socket)
        self._emptied.clear()
        if self._closing is None:
            return True
        socket.close(*self._closing)
        return False

    def discard(self, socket: ClosableSocket) -> None:
        """Forget a closed socket."""
        self._sockets.discard(socket)
        if not self._sockets:
            self._emptied.set()

    def __len__(self) -> int:
        return len(self._sockets)

    def __iter__(self) -> Iterator[ClosableSocket]:
        return iter(tuple(self._sockets))

    async def close_all(
        self,
        code: int = CLOSE_GOING_AWAY,
        reason: str = "server shutting down",
        *,
        timeout: float = 5.0,
        stopping: bool = False,
    ) -> int:
        """Close every open socket with ``code`` and wait (at most ``timeout`` seconds) for the
        closing handshakes; returns how many sockets were asked to close. With ``stopping``
        (the process is shutting down), sockets whose handshake finishes afterwards are closed
        the same way as they open (``add``)."""
        if stopping:
            self._closing = (code, reason)
        sockets = tuple(self._sockets)
        for socket in sockets:
            try:
                socket.close(code, reason)
            except Exception:  # one broken socket must not keep the others open
                log.warning("closing a WebSocket failed", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), timeout)
        return len(sockets)


_registries: weakref.WeakKeyDictionary[Hub, OpenSockets] = weakref.WeakKeyDictionary()


def open_sockets(services: Services) -> OpenSockets:
    """The registry of open chat and ticker sockets of ``services`` (one per process).

    The runtime closes them on SIGTERM, before waiting for connections:
    ``await open_sockets(services).close_all(1001, stopping=True)``.
    """
    # Services has __slots__ without __weakref__; the hub lives exactly as long and can be a key.
    registry = _registries.get(services.hub)
    if registry is None:
        registry = _registries[services.hub] = OpenSockets()
    return registry


# -- helpers shared with the ticker -----------------------------------------------------------


async def session_login(handler: RequestHandler, services: Services) -> Login | None:
    """The login behind the request's signed session cookie (``BaseHandler.authenticate``'s
    logic, for handlers that cannot inherit BaseHandler), or None."""
    max_age = services.settings.token_absolute_days + 1
    raw = handler.get_signed_cookie(SESSION_COOKIE, max_age_days=max_age)
    if raw is None:
        return None
    try:
        token = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        return await services.logins.resolve(token)
    except TokenExpired:
        return None


def handshake_language(handler: RequestHandler, account_language: str | None) -> str:
    """The language of the person behind a handshake (``BaseHandler.language``'s order): the
    account's choice, else the browser's (the ``mservices_lang`` cookie), else its
    ``Accept-Language``, else Chinese."""
    return (
        supported(account_language)
        or supported(handler.get_cookie(LANGUAGE_COOKIE))
        or negotiate(handler.request.headers.get("Accept-Language"))
        or DEFAULT_LANGUAGE
    )


def handshake_abandoned(handler: WebSocketHandler) -> bool:
    """True in ``open`` when the connection is already gone or closing: the client left while
    ``prepare`` was awaiting, and Tornado has run ``on_close`` already."""
    connection = handler.ws_connection
    return connection is None or connection.is_closing()


def origin_allowed(origin: str, host: str, allowed: Iterable[str]) -> bool:
    """True for the site's own origin (http or https on the request's ``Host``) and for the
    configured ``allowed`` origins (``*`` allows every origin)."""
    origin = origin.strip().rstrip("/").lower()
    host = host.strip().lower()
    if host and origin in (f"http://{host}", f"https://{host}"):
        return True
    permitted = {entry.rstrip("/").lower() for entry in allowed}
    return "*" in permitted or origin in permitted


def site_origin_allowed(handler: RequestHandler, settings: Settings, origin: str) -> bool:
    """``check_origin`` of the site's WebSockets: the request's own host and ``ws_origins``."""
    return origin_allowed(origin, handler.request.headers.get("Host", ""), settings.ws_origins)


class FrameError(Exception):
    """A client frame that is not a message this socket accepts: a stable ``code`` and a
    ``text`` translated for the sender when the error frame is written."""

    def __init__(self, code: str, text: Text) -> None:
        super().__init__(str(text))
        self.code = code
        self.text = text


def message_text(message: str | bytes, *, plain: bool = False) -> str:
    """The text of a client frame: ``{"type": "message", "text": ...}`` or plain text; with
    ``plain`` (the seed's format) every text frame is the message, braces and all.

    Refused (``FrameError``): binary frames and other JSON objects (``bad_frame``), blank text
    (``empty``), text over MAX_TEXT_CHARS (``too_long``), text that cannot be UTF-8 (``bad_text``).
    """
    if isinstance(message, bytes):
        raise FrameError("bad_frame", Text("send text frames, not binary ones"))
    text = message
    if not plain and message.lstrip().startswith("{"):
        if json_depth_exceeds(message, MAX_JSON_DEPTH):  # json.loads would recurse that deep
            raise FrameError(
                "bad_frame", Text("a frame nests at most {limit} levels", limit=MAX_JSON_DEPTH)
            )
        try:
            data = json.loads(message)
        except ValueError:
            data = None  # not JSON after all: plain text that starts with a brace
        if isinstance(data, dict):
            if data.get("type") != "message" or not isinstance(data.get("text"), str):
                raise FrameError(
                    "bad_frame", Text("a JSON frame must be {frame}", frame=FRAME_SHAPE)
                )
            text = data["text"]
    if not text.strip():
        raise FrameError("empty", Text("the message is empty"))
    if len(text) > MAX_TEXT_CHARS:
        raise FrameError(
            "too_long", Text("a message holds at most {limit} characters", limit=MAX_TEXT_CHARS)
        )
    try:
        # JSON may escape a lone surrogate (\ud800), which no UTF-8 frame or column can hold.
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError(
            "bad_text", Text("the text is not valid Unicode (a lone surrogate)")
        ) from None
    return text


frame_once = FrameOnce()
"""The frame of the broadcast being handed out (the hub sends one string to a room in a row)."""
plain_once = PlainFrames()
"""The same for the plain-text members: the broadcast's lines, once per language."""


# -- the chat socket --------------------------------------------------------------------------


class ChatSocketHandler(WebSocketHandler):
    """``/message?room=NAME&last_id=N``: the chat WebSocket of a logged-in browser.

    Per connection it keeps little beyond what Tornado needs: the services, the user, the room,
    the session's token hash and a few flags (class attributes until they change); the rate
    limiter is created with the first message, so an idle socket has none.
    """

    send_buffer_bytes: int = SEND_BUFFER_BYTES
    rate_per_second: float = RATE_PER_SECOND
    rate_burst: int = RATE_BURST
    services: Services
    user: str = ""
    token_hash: str = ""
    """Set by ``prepare``; empty while a handshake is still authenticating (the client may
    drop then: Tornado runs ``on_close`` before ``prepare`` has finished)."""
    reader_locale: Locale | None = None
    """The sender's language for error frames; ``prepare`` sets it once the login is known."""
    room: str = DEFAULT_ROOM
    last_id: int | None = None
    admission: Admission | None = None
    """Set by ``prepare`` for a private room (a support thread or queue): who entered it, as
    whom; None in a public room."""
    plain: bool = True
    """The seed's plain-text format, unless the handshake negotiated CHAT_SUBPROTOCOL."""
    _bucket: TokenBucket | None = None
    _refusals: int = 0
    _joined: bool = False
    _left: bool = False
    _closing: bool = False
    _closed: bool = False

    def initialize(self, services: Services, need: Requirement) -> None:
        """Receive the process's services and the route's requirement (route kwargs)."""
        self.services = services
        self.need = need

    @property
    def hub(self) -> Hub:
        """The process's hub."""
        return self.services.hub

    async def prepare(self) -> None:
        """Authenticate with the session cookie (401), check the route's permission (403),
        read the room and resume point (400) and check that the user may enter the room (403:
        a private room is refused on every join and resume, ``rooms.py``)."""
        # Tornado runs open, every on_message and the close in this handshake's task: bound
        # here, the request id and user id are on every line the socket's messages write.
        self.request_id = request_id_from(self.request.headers.get("X-Request-Id"))
        bind_request(self.request_id)
        login = await session_login(self, self.services)
        if login is None:
            raise HTTPError(401, reason="Unauthorized")
        bind_user(login.principal.user_id)
        if not await self.services.menus.permits(login.principal, self.need.for_method("GET")):
            raise HTTPError(403, reason="Permission required")
        self.token_hash = login.token_hash
        self.user = login.principal.name
        # Resolved now, while the cookies are at hand: one shared Locale per language.
        self.reader_locale = locale_for(handshake_language(self, login.principal.language))
        # The request lives as long as the socket: let go of its parsed cookies (about 1.2 KB;
        # Tornado parses them again if anyone asks).
        self.request.__dict__.pop("_cookies", None)
        room = self.get_query_argument("room", DEFAULT_ROOM) or DEFAULT_ROOM
        if not ROOM_PATTERN.match(room):
            raise HTTPError(400, reason="Invalid room")
        if room != DEFAULT_ROOM:
            self.room = room
        last_id = self.get_query_argument("last_id", "")
        if last_id:
            if not LAST_ID_PATTERN.match(last_id):
                raise HTTPError(400, reason="Invalid last_id")
            self.last_id = int(last_id)
        try:
            self.admission = await self.services.rooms.admit(login.principal, room)
        except RoomRefused:
            raise HTTPError(403, reason="Room not permitted") from None

    def check_origin(self, origin: str) -> bool:
        """The site's own origin and ``settings.ws_origins``; Tornado answers 403 otherwise."""
        return site_origin_allowed(self, self.services.settings, origin)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """CHAT_SUBPROTOCOL (JSON frames) when the client offers it; otherwise none, and the
        socket speaks the seed's plain text."""
        if CHAT_SUBPROTOCOL in subprotocols:
            self.plain = False
            return CHAT_SUBPROTOCOL
        return None

    def get_user_locale(self) -> Locale:
        """The sender's language (``handshake_language``), as ``prepare`` resolved it."""
        return self.reader_locale or locale_for(DEFAULT_LANGUAGE)

    def get_compression_options(self) -> None:
        """Never compress: every member of a room is written the same frame bytes."""
        return None

    @property
    def max_message_size(self) -> int:
        """At most MAX_FRAME_BYTES per frame, whatever the application allows elsewhere."""
        configured: int = self.settings.get("websocket_max_message_size", MAX_FRAME_BYTES)
        return min(configured, MAX_FRAME_BYTES)

    @property
    def ping_interval(self) -> float | None:
        """None: Tornado's ping task per socket is off; ``services.chat_pings`` pings every
        chat socket of the process from one task (every PING_INTERVAL seconds)."""
        return None

    def on_pong(self, data: bytes) -> None:
        """The client answered a ping: it is alive."""
        self.services.chat_pings.pong(self)

    async def open(self) -> None:
        """Join the room: the hub sends history (or what was missed) and who is online.

        Nothing is registered when the client dropped during the handshake (``on_close`` has
        run already and will not run again), or when the process is shutting down (closed at
        once with 1001).
        """
        if self._closed or handshake_abandoned(self):
            return
        if not open_sockets(self.services).add(self):
            self._closing = True
            return
        self.services.chat_sessions.add(self.token_hash, self)
        self.services.chat_pings.add(self)
        self.set_nodelay(True)
        try:
            await self.hub.join(self, self.room, last_id=self.last_id)
            if self.admission is not None:  # a thread's state, whether an agent is online
                await self.services.rooms.welcome(self, self.admission)
        except Exception:
            log.exception("joining %s failed for %s", self.room, self.user)
            self._refuse("unavailable", Text("the chat is unavailable; try again later"))
            self._close(CLOSE_INTERNAL_ERROR, "chat unavailable")
        # From here on closing leaves the room (a failed join is undone the same way).
        self._joined = True
        if self._closing:  # closed while joining: neither close nor on_close could leave
            self._leave_now()

    def send(self, payload: str) -> None:
        """Write an encoded frame now (hub ``Member``); past SEND_BUFFER_BYTES unsent, close
        the socket with 4008."""
        if self._closing:
            return
        if not self.plain:
            self._write(frame_once(payload))
        elif frames := plain_once(payload, self.get_user_locale()):
            self._write(frames)

    async def on_message(self, message: str | bytes) -> None:
        """Publish a message to the room, or answer an error frame."""
        if self._closing:
            return
        if self._bucket is None:
            self._bucket = TokenBucket(self.rate_per_second, self.rate_burst)
        if not self._bucket.take():
            self._refusals += 1
            if self._refusals >= REFUSALS_BEFORE_CLOSE:
                self._close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
            else:
                rate = f"{self.rate_per_second:g}"
                self._refuse(
                    "rate_limited",
                    Text(
                        "at most {rate} messages a second (bursts of {burst})",
                        rate=rate,
                        burst=self.rate_burst,
                    ),
                )
            return
        self._refusals = 0
        try:
            text = message_text(message, plain=self.plain)
        except FrameError as error:
            self._refuse(error.code, error.text)
            return
        if self.admission is None:
            await self.hub.say(self.user, self.room, text)
            return
        try:  # a support thread stores the message with the thread's change first
            await self.services.rooms.say(self.admission, self.user, text)
        except RoomRefused as refused:
            self._refuse(refused.code, refused.text)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake and leave the room now: a socket the server closes (an
        ended session's 4001, a shutdown, a refused client) is gone for the others at once, not
        when the client answers or the handshake times out."""
        self._closing = True
        super().close(code, reason)
        self._leave_now()

    def on_close(self) -> None:
        """Leave the room (in the background: presence may be remote)."""
        self._closing = True
        self._closed = True
        open_sockets(self.services).discard(self)
        self.services.chat_sessions.discard(self.token_hash, self)
        self.services.chat_pings.discard(self)
        self._leave_now()

    def _leave_now(self) -> None:
        """Leave the room once, in the background, when the join got far enough to be left."""
        if self._joined and not self._left:
            self._left = True
            self.services.spawn(self.hub.leave(self, self.room))

    def _refuse(self, code: str, text: Text) -> None:
        """Write an error frame (a line, in plain text), its text in the sender's language
        (its own frame: the broadcast memos are left alone)."""
        if not self._closing:
            locale = self.get_user_locale()
            said = text.translate(locale.translate)
            payload = encode("error", self.room, code=code, text=said, ts=time.time())
            if self.plain:
                self._write(plain_frames(payload, locale))
            else:
                self._write(text_frame(payload.encode("utf-8")))

    def _close(self, code: int, reason: str) -> None:
        """Close after what was written before (the same stream keeps the order)."""
        if not self._closing:
            self.close(code, reason)

    def _write(self, frame: bytes) -> None:
        """Write ``frame`` to the stream, or close a client that lets SEND_BUFFER_BYTES pile up.

        The limit is set for this write only, and only when bytes are already waiting: a first
        frame of any size (a long history) goes out, and Tornado's own control frames (pongs,
        the close frame) are never refused. The write's future is not awaited; the stream
        retrieves its error itself.
        """
        connection = self.ws_connection
        if connection is None or connection.is_closing() or connection.stream is None:
            return
        stream = connection.stream
        stream.max_write_buffer_size = self.send_buffer_bytes if stream.writing() else None
        full = False
        try:
            stream.write(frame)
        except StreamBufferFullError:
            full = True
        except StreamClosedError:
            pass  # the connection is gone: on_close leaves the room
        finally:
            stream.max_write_buffer_size = None
        if full:
            log.warning("closing a slow chat consumer: %s in %s", self.user, self.room)
            self._close(CLOSE_SLOW_CONSUMER, "slow consumer")

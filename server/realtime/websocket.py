"""The chat WebSocket ``/message``: a browser session's connection to one hub room.

The socket authenticates with the signed session cookie before the upgrade (401 without a valid
session) and accepts the site's own origin plus ``settings.ws_origins`` (403 otherwise). Once
open, the handler is a hub ``Member``: the hub hands it encoded frames through ``send``, which
queues them on a bounded queue drained by one writer task, so a slow client costs at most
SEND_QUEUE_LIMIT frames of memory and is then closed with 4008.

Frames from the client are ``{"type": "message", "text": ...}`` or plain text (what the seed's
page sends). Limits per connection: MAX_FRAME_BYTES per frame (Tornado closes with 1009),
MAX_TEXT_CHARS per message, and a token bucket of RATE_PER_SECOND with a burst of RATE_BURST
(an error frame per refused message, close 1008 after REFUSALS_BEFORE_CLOSE in a row).

Every open chat and ticker socket of a process is kept in ``open_sockets(services)`` so the
runtime can close them all with 1001 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from tornado.web import HTTPError, RequestHandler
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from server.handlers.base import SESSION_COOKIE
from server.logins import Login, TokenExpired
from server.realtime.hub import DEFAULT_ROOM, Hub, encode
from server.services import Services
from server.settings import Settings

log = logging.getLogger("mservices.chat")

MAX_FRAME_BYTES = 64 * 1024
MAX_TEXT_CHARS = 2000
RATE_PER_SECOND = 10.0
RATE_BURST = 20
REFUSALS_BEFORE_CLOSE = 10
SEND_QUEUE_LIMIT = 256
PING_INTERVAL = 25.0

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SLOW_CONSUMER = 4008

ROOM_PATTERN = re.compile(r"^[\w.-]{1,64}$")
"""Room names: letters (any script), digits, ``_``, ``.`` and ``-``; the column holds 64."""
LAST_ID_PATTERN = re.compile(r"^[0-9]{1,19}$")


# -- the registry of open sockets (closed with 1001 at shutdown) ------------------------------


class ClosableSocket(Protocol):
    """An open WebSocket the registry can close."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake with ``code``."""


class OpenSockets:
    """The open chat and ticker sockets of one process."""

    def __init__(self) -> None:
        self._sockets: set[ClosableSocket] = set()
        self._emptied = asyncio.Event()
        self._emptied.set()

    def add(self, socket: ClosableSocket) -> None:
        """Track an opened socket."""
        self._sockets.add(socket)
        self._emptied.clear()

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
    ) -> int:
        """Close every open socket with ``code`` and wait (at most ``timeout`` seconds) for the
        closing handshakes; returns how many sockets were asked to close."""
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
    ``await open_sockets(services).close_all(1001)``.
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


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> bool:
        """Spend one token; False when none is left."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class FrameError(Exception):
    """A client frame that is not a message this socket accepts."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def message_text(message: str | bytes) -> str:
    """The text of a client frame: ``{"type": "message", "text": ...}`` or plain text."""
    if isinstance(message, bytes):
        raise FrameError("bad_frame", "send text frames, not binary ones")
    text = message
    if message.lstrip().startswith("{"):
        try:
            data = json.loads(message)
        except ValueError:
            data = None  # not JSON after all: plain text that starts with a brace
        if isinstance(data, dict):
            if data.get("type") != "message" or not isinstance(data.get("text"), str):
                raise FrameError("bad_frame", 'expected {"type": "message", "text": "..."}')
            text = data["text"]
    if not text.strip():
        raise FrameError("empty", "the message is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise FrameError("too_long", f"a message holds at most {MAX_TEXT_CHARS} characters")
    return text


class _Utf8Once:
    """UTF-8 bytes of the last payload seen: the hub hands one string to every member of a room
    in a row, so the broadcast is encoded once, not once per connection."""

    def __init__(self) -> None:
        self._text: str | None = None
        self._data = b""

    def __call__(self, payload: str) -> bytes:
        if payload is not self._text:
            self._text, self._data = payload, payload.encode("utf-8")
        return self._data


utf8_once = _Utf8Once()


@dataclass(frozen=True, slots=True)
class _Close:
    """A queued instruction: close once every frame queued before it is written."""

    code: int
    reason: str


# -- the chat socket --------------------------------------------------------------------------


class ChatSocketHandler(WebSocketHandler):
    """``/message?room=NAME&last_id=N``: the chat WebSocket of a logged-in browser."""

    send_queue_limit: int = SEND_QUEUE_LIMIT
    rate_per_second: float = RATE_PER_SECOND
    rate_burst: int = RATE_BURST
    services: Services
    hub: Hub
    login: Login
    user: str
    room: str
    last_id: int | None

    def initialize(self, services: Services) -> None:
        """Receive the process's services (route kwargs)."""
        self.services = services
        self.hub = services.hub
        self.room = DEFAULT_ROOM
        self.last_id = None
        self._sockets = open_sockets(services)
        self._queue: asyncio.Queue[bytes | _Close] = asyncio.Queue(self.send_queue_limit)
        self._writer: asyncio.Task[None] | None = None
        self._bucket = TokenBucket(self.rate_per_second, self.rate_burst)
        self._refusals = 0
        self._joined = False
        self._closing = False
        self._closed = False

    async def prepare(self) -> None:
        """Authenticate with the session cookie (401) and read the room and resume point (400)."""
        login = await session_login(self, self.services)
        if login is None:
            raise HTTPError(401, reason="Unauthorized")
        self.login = login
        self.user = login.principal.name
        room = self.get_query_argument("room", DEFAULT_ROOM) or DEFAULT_ROOM
        if not ROOM_PATTERN.match(room):
            raise HTTPError(400, reason="Invalid room")
        self.room = room
        last_id = self.get_query_argument("last_id", "")
        if last_id:
            if not LAST_ID_PATTERN.match(last_id):
                raise HTTPError(400, reason="Invalid last_id")
            self.last_id = int(last_id)

    def check_origin(self, origin: str) -> bool:
        """The site's own origin and ``settings.ws_origins``; Tornado answers 403 otherwise."""
        return site_origin_allowed(self, self.services.settings, origin)

    @property
    def max_message_size(self) -> int:
        """At most MAX_FRAME_BYTES per frame, whatever the application allows elsewhere."""
        configured: int = self.settings.get("websocket_max_message_size", MAX_FRAME_BYTES)
        return min(configured, MAX_FRAME_BYTES)

    @property
    def ping_interval(self) -> float | None:
        """Ping every ``websocket_ping_interval`` seconds (PING_INTERVAL when unset)."""
        interval: float | None = self.settings.get("websocket_ping_interval", PING_INTERVAL)
        return interval

    async def open(self) -> None:
        """Join the room: the hub sends history (or what was missed) and who is online."""
        self._sockets.add(self)
        self.set_nodelay(True)
        self._writer = asyncio.ensure_future(self._write_forever())
        try:
            await self.hub.join(self, self.room, last_id=self.last_id)
        except Exception:
            log.exception("joining %s failed for %s", self.room, self.user)
            self._refuse("unavailable", "the chat is unavailable; try again later")
            self._close_after_queued(CLOSE_INTERNAL_ERROR, "chat unavailable")
        # From here on closing leaves the room (a failed join is undone the same way).
        self._joined = True
        if self._closed:  # the connection went away while joining: on_close could not leave
            await self.hub.leave(self, self.room)

    def send(self, payload: str) -> None:
        """Queue an encoded frame (hub ``Member``); a full queue closes the socket with 4008."""
        if self._closing:
            return
        try:
            self._queue.put_nowait(utf8_once(payload))
        except asyncio.QueueFull:
            log.warning("closing a slow chat consumer: %s in %s", self.user, self.room)
            self._closing = True
            while not self._queue.empty():  # release the backlog now, not when the socket dies
                self._queue.get_nowait()
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")

    async def on_message(self, message: str | bytes) -> None:
        """Publish a message to the room, or answer an error frame."""
        if self._closing:
            return
        if not self._bucket.take():
            self._refusals += 1
            if self._refusals >= REFUSALS_BEFORE_CLOSE:
                self._close_after_queued(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
            else:
                self._refuse(
                    "rate_limited",
                    f"at most {self.rate_per_second:g} messages a second "
                    f"(bursts of {self.rate_burst})",
                )
            return
        self._refusals = 0
        try:
            text = message_text(message)
        except FrameError as error:
            self._refuse(error.code, error.text)
            return
        await self.hub.say(self.user, self.room, text)

    def on_close(self) -> None:
        """Stop writing and leave the room (in the background: presence may be remote)."""
        self._closing = True
        self._closed = True
        self._sockets.discard(self)
        if self._writer is not None:
            self._writer.cancel()
        if self._joined:
            self.services.spawn(self.hub.leave(self, self.room))

    def _refuse(self, code: str, text: str) -> None:
        self.send(encode("error", self.room, code=code, text=text, ts=time.time()))

    def _close_after_queued(self, code: int, reason: str) -> None:
        """Close once what is already queued (error frames) has been written."""
        if self._closing:
            return
        self._closing = True
        try:
            self._queue.put_nowait(_Close(code, reason))
        except asyncio.QueueFull:
            self.close(code, reason)

    async def _write_forever(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Close):
                self.close(item.code, item.reason)
                return
            try:
                await self.write_message(item)
            except WebSocketClosedError:
                return

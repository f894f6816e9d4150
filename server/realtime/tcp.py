"""The TCP chat: chat rooms over plain TCP, for ``nc``, telnet or a few lines of ``socket`` code.

TCP users are hub members like WebSocket users, so both share rooms, history and presence.

The protocol is UTF-8 text, one line per message; the client ends lines with LF or CRLF, the
server ends its own with CRLF:

- On connect the server greets with how to log in. The first ``LOGIN <name> <password>`` must
  arrive within ``login_timeout`` seconds (10 by default). The password is everything after
  the single space that follows the name, so it may contain spaces (only the line ending is
  removed); a name that contains spaces is written in double quotes: ``LOGIN "ann lee" secret``.
  Accounts and throttling are those of the API (``server/accounts.py``): a wrong name or
  password, or a throttled one, is answered with the API's message; after ``login_attempts``
  refusals the connection is closed.
- Every login is a session (device ``tcp``), listed in ``GET /user/sessions`` and revocable like
  the others: the connection registers under its token hash in ``services.chat_sessions``, so
  whatever revokes the token (``DELETE /user/sessions/{id}``, a password change, closing the
  account, an administrator deactivating the user or revoking their sessions), in any process,
  ends the connection with SESSION_ENDED. Each line also re-checks the token (through the
  login cache, so it costs no query while warm) as a backstop for a lost event. When the
  connection ends, for whatever reason, its session is revoked, so sessions do not pile up.
- The whole door needs ``TCP_NEED`` (``chat.use``), checked at ``LOGIN``: an account whose roles
  do not grant it is told so and disconnected.
- Once logged in the user is in room ``lobby``; every line is a message to the current room,
  except ``/who`` (who is online here), ``/join ROOM`` (leave this room for ROOM), ``/rooms``
  (the rooms one may enter), ``/support`` (one's support conversation; an agent's queue),
  ``/help`` and ``/quit``. Private rooms (``rooms.py``: support conversations and the queue) are
  checked on every ``/join``: a refused one is an error line and the user stays where they are;
  what is said in a conversation is stored with it first (refused once it is closed), and an
  agent's lines there carry the staff badge ``user (staff)``. Empty lines are ignored (and, like
  any input, keep the connection from going idle).
  Room names, the length of a message and the rate limit are the WebSocket's (``limits.py``:
  shared rooms, shared rules): an error line per refused line, and the connection is closed after
  REFUSALS_BEFORE_CLOSE rate-limited lines in a row.
- Server lines: ``[room] user: text`` for a message, ``* ...`` for notices (joins, leaves, who
  is online, history headers, goodbyes), ``! ...`` for errors.
- Language: the server's own sentences (after ``* `` and ``! ``) are in the connection's
  language. A TCP client sends no ``Accept-Language``, so until ``LOGIN`` that is Chinese (the
  greeting names the switch, ``LANG en_US``); ``LOGIN`` turns to the account's language when
  the account has chosen one (as on the web, the account's choice wins over the client's), and
  ``/lang en_US`` or ``/lang zh_CN`` switches this connection later. Messages, names and room
  names are data and are never translated; the ``* ``/``! `` markers and commands stay as they
  are.

Limits: a line holds at most LINE_LIMIT bytes; a longer one is answered with an error line and
skipped (the connection stays open, the next line is read normally). A line that is not valid
UTF-8 is answered with an error line and skipped. A connection without input for
``idle_seconds`` (``settings.tcp_idle_seconds``) is closed with a line saying so.

Output is queued per connection (at most ``queue_size`` lines) and written by one task that
awaits ``drain()`` after every write, so the socket's flow control holds the queue back; a
client that stops reading is disconnected when its queue is full, instead of growing memory.
Control characters in other users' text are replaced by spaces, so no one can drive another
user's terminal.

Passwords travel in clear text: expose the port only on a trusted network (the default host is
127.0.0.1) or behind a TLS terminator.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from tornado.locale import Locale

from repositories.users import UserRepository
from schemas.text import Text, ntext
from schemas.user import LoginRequest
from server.accounts import Accounts, InvalidCredentials, IssuedLogin, TooManyAttempts
from server.i18n import DEFAULT_LANGUAGE, LANGUAGES, locale_for, supported, translate
from server.logins import TokenExpired
from server.logs import bind_request, bind_user, new_request_id
from server.permissions import CHAT_USE
from server.principal import Principal
from server.realtime.hub import DEFAULT_ROOM
from server.realtime.limits import (
    MAX_TEXT_CHARS,
    RATE_BURST,
    RATE_PER_SECOND,
    REFUSALS_BEFORE_CLOSE,
    ROOM_PATTERN,
    TokenBucket,
)
from server.realtime.rooms import QUEUE_ROOM, Admission, RoomRefused
from server.services import Services
from server.support import STATUS_TEXTS

log = logging.getLogger("mservices.tcp")

LINE_LIMIT = 4096
"""Bytes per line, without the line ending."""


class PermissionDenied(Exception):
    """The account logged in but its roles do not grant what the TCP door needs."""


TCP_NEED = CHAT_USE
"""What the TCP door needs, checked at ``LOGIN``; every command after it is chat."""

LOGIN_TIMEOUT = 10.0
LOGIN_ATTEMPTS = 3
QUEUE_SIZE = 256
"""Lines queued for one client before it counts as not reading (a history holds up to 51)."""
FLUSH_SECONDS = 2.0
"""How long closing a connection waits for its queued lines to be written."""
CLOSE_SECONDS = 5.0
"""How long ``TcpChatServer.close`` waits for connections to finish before cutting them."""
NOTICE = "* "
"""How a notice line starts (the sentence after it is in the connection's language)."""
ERROR = "! "
"""How an error line starts."""
LANGUAGE_CHOICES = "|".join(LANGUAGES)
GREETING = Text("mservices chat. Log in with: LOGIN <name> <password>")
"""The first line, a notice; ``greeting`` adds the language switch in the other language."""
LOGIN_HINT = Text("log in first: LOGIN <name> <password>")
LOGIN_USAGE = Text('usage: LOGIN <name> <password> (a name with spaces in quotes: LOGIN "a b" pw)')
LANG_USAGE = Text("usage: {command} {choices}", command="LANG", choices=LANGUAGE_CHOICES)
HELP = Text(
    "commands: /who (who is here), /join ROOM (change room), /rooms (the rooms you may "
    "enter), /support (talk to support), /lang {choices} (language), /quit; any other line "
    "is said",
    choices=LANGUAGE_CHOICES,
)
AGENTS_ONLINE = Text("a support agent is online")
AGENTS_AWAY = Text("no support agent is online right now; leave a message and we will answer")
"""Told to a support conversation's members when it changes (``agents`` frames)."""
TOO_LONG = Text("line too long (at most {limit} bytes); ignored", limit=LINE_LIMIT)
NOT_UTF8 = Text("line is not valid UTF-8; ignored")
SESSION_ENDED = Text("your session was ended; goodbye")
"""The last line (a notice) of a connection whose session was revoked (logged out
elsewhere)."""
SHUTTING_DOWN = Text("the server is shutting down; goodbye")
"""The last line (a notice) of every connection when the server stops (``close``)."""
DEVICE = "tcp"
"""The device of a TCP chat session in ``GET /user/sessions``."""

_CONTROL_CHARACTERS = {code: " " for code in (*range(0x20), *range(0x7F, 0xA0))}


def clean(value: object) -> str:
    """``value`` as text safe for a terminal: control characters (newlines, escapes) become
    spaces."""
    return str(value).translate(_CONTROL_CHARACTERS)


def notice(locale: Locale, message: Text | str) -> str:
    """A notice line: ``* `` and ``message`` in ``locale``'s language (a ``str`` is sent as
    it is)."""
    return NOTICE + translate(locale, message)


def error(locale: Locale, message: Text | str) -> str:
    """An error line: ``! `` and ``message`` in ``locale``'s language (a ``str`` is sent as
    it is)."""
    return ERROR + translate(locale, message)


def language_switch(language: str) -> str:
    """How to switch from ``language`` to each other language, each named in its own language
    (as the web's switch does): ``(English: LANG en_US)``."""
    others = (f"{name}: LANG {code}" for code, name in LANGUAGES.items() if code != language)
    return f"({'; '.join(others)})"


def greeting(language: str) -> str:
    """The first line: GREETING in ``language``, then the language switch."""
    return f"{notice(locale_for(language), GREETING)} {language_switch(language)}"


def online_line(locale: Locale, room: str, users: Sequence[object]) -> str:
    """Who is online in ``room`` (names are data, shown as they are)."""
    names = ", ".join(clean(user) for user in users)
    return notice(locale, Text("online in {room}: {users}", room=room, users=names))


@functools.lru_cache(maxsize=8)
def render(payload: str, language: str = DEFAULT_LANGUAGE) -> tuple[str, ...]:
    """The lines a TCP client reading ``language`` sees for one hub frame (none for a frame it
    has no use for).

    The hub hands one payload to every member of a room in a row, so a small cache parses it
    once per broadcast and language rather than once per member.
    """
    try:
        frame = json.loads(payload)
    except ValueError:
        return ()
    if not isinstance(frame, dict):
        return ()
    locale = locale_for(language)
    room = clean(frame.get("room", ""))
    match frame.get("type"):
        case "message":
            return (_message_line(locale, room, frame),)
        case "history":
            messages = [item for item in frame.get("messages") or () if isinstance(item, dict)]
            if not messages:
                return (notice(locale, Text("{room}: no messages yet", room=room)),)
            header = ntext(
                "{room}: the last message",
                "{room}: the last {count} messages",
                len(messages),
                room=room,
            )
            return (
                notice(locale, header),
                *(_message_line(locale, room, message) for message in messages),
            )
        case "join":
            user = clean(frame.get("user", "?"))
            return (notice(locale, Text("{user} joined {room}", user=user, room=room)),)
        case "leave":
            user = clean(frame.get("user", "?"))
            return (notice(locale, Text("{user} left {room}", user=user, room=room)),)
        case "presence":
            return (online_line(locale, room, frame.get("users") or []),)
        case "error":
            return (error(locale, clean(frame.get("text", "error"))),)
        case "thread" if isinstance(frame.get("thread"), dict):
            return (notice(locale, _thread_notice(frame["thread"])),)
        case "agents":
            return (notice(locale, AGENTS_ONLINE if frame.get("online") else AGENTS_AWAY),)
    return ()


def _message_line(locale: Locale, room: str, message: dict[str, Any]) -> str:
    user = clean(message.get("user", "?"))
    if message.get("staff"):  # an agent in a support conversation
        user = translate(locale, Text("{user} (staff)", user=user))
    return f"[{room}] {user}: {clean(message.get('text', ''))}"


def _thread_notice(thread: dict[str, Any]) -> Text:
    """A support thread's change: whose, where it stands, and its newest message."""
    status = STATUS_TEXTS.get(str(thread.get("status")), clean(thread.get("status", "?")))
    last = thread.get("last_message")
    said = ""
    if isinstance(last, dict):
        said = f"{clean(last.get('user', '?'))}: {clean(last.get('text', ''))}"
    return Text(
        "{room} ({customer}): {status}; last: {said}",
        room=clean(thread.get("room", "?")),
        customer=clean(thread.get("customer", "?")),
        status=status,
        said=said or "-",
    )


def parse_login(rest: str) -> tuple[str, str] | None:
    """The (name, password) of a LOGIN line after the keyword, or None when malformed."""
    if rest.startswith('"'):
        name, quote, password = rest[1:].partition('" ')
        if not quote:
            return None
    else:
        name, _, password = rest.partition(" ")
    if not name or not password:
        return None
    return name, password


class TcpChatServer:
    """Serves the TCP chat on one port; start it with ``start`` and stop it with ``close``."""

    def __init__(
        self,
        services: Services,
        *,
        login_timeout: float = LOGIN_TIMEOUT,
        idle_seconds: float | None = None,
        login_attempts: int = LOGIN_ATTEMPTS,
        queue_size: int = QUEUE_SIZE,
        close_seconds: float = CLOSE_SECONDS,
        rate_per_second: float = RATE_PER_SECOND,
        rate_burst: int = RATE_BURST,
    ) -> None:
        self.services = services
        self.login_timeout = login_timeout
        self.idle_seconds = (
            idle_seconds if idle_seconds is not None else services.settings.tcp_idle_seconds
        )
        self.login_attempts = login_attempts
        self.queue_size = queue_size
        self.close_seconds = close_seconds
        self.rate_per_second = rate_per_second
        self.rate_burst = rate_burst
        self.slow_readers_dropped = 0
        """Connections cut because their queue filled (for metrics)."""
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._goodbye: Text | str | None = None

    @property
    def connections(self) -> int:
        """Open connections, logged in or not (for metrics)."""
        return len(self._connections)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host``:``port`` (0: any free port); returns the port bound."""
        # The reader's limit lets a line of LINE_LIMIT bytes plus CRLF through; longer ones
        # are detected by readuntil and skipped (see _Connection.read_raw).
        self._server = await asyncio.start_server(self._handle, host, port, limit=LINE_LIMIT + 2)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self, goodbye: Text | str = SHUTTING_DOWN) -> None:
        """Stop accepting, send every client the notice ``goodbye`` (in its language), and
        wait (at most ``close_seconds``) for the connections to be written out and closed; cut
        those that are not."""
        self._goodbye = goodbye
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.finish(connection.notice(goodbye))
        if self._handlers:
            _, late = await asyncio.wait(set(self._handlers), timeout=self.close_seconds)
            for handler in late:
                handler.cancel()
            if late:
                log.warning("tcp chat: %d connection(s) cut at shutdown", len(late))
                await asyncio.wait(late, timeout=FLUSH_SECONDS)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One task per connection, every command read in it: its lines carry this id (and the
        # user's, from LOGIN on).
        bind_request(new_request_id("tcp-"))
        connection = _Connection(self, reader, writer)
        handler = asyncio.current_task()
        assert handler is not None  # start_server runs this callback in a task
        self._connections.add(connection)
        self._handlers.add(handler)
        try:
            if self._goodbye is not None:  # accepted just as the server was closing
                connection.finish(connection.notice(self._goodbye))
            await connection.run()
        except Exception:
            log.exception("tcp chat: connection from %s failed", connection.ip)
        finally:
            self._connections.discard(connection)
            self._handlers.discard(handler)


class _Connection:
    """One TCP client; once logged in, a hub member (``user`` and a non-blocking ``send``).

    It speaks ``language``: Chinese until ``LANG`` or ``LOGIN`` says otherwise.
    """

    def __init__(
        self, server: TcpChatServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.hub = server.services.hub
        self.reader = reader
        self.writer = writer
        self.user = ""
        self.room: str | None = None
        self.principal: Principal | None = None
        """Who logged in (``LOGIN``); the room policy asks about them on every ``/join``."""
        self.admission: Admission | None = None
        """How the user is in the current room when it is private (``rooms.py``), else None."""
        self.language = DEFAULT_LANGUAGE
        self.locale = locale_for(DEFAULT_LANGUAGE)
        self._chosen: str | None = None
        """The language ``LANG`` asked for on this connection (the account's choice wins at
        ``LOGIN``)."""
        peer = writer.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else "unknown"
        self._lines: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._write_task: asyncio.Task[None] | None = None
        self._bucket = TokenBucket(server.rate_per_second, server.rate_burst)
        self._refusals = 0
        self._token: str | None = None
        self._token_hash: str | None = None
        """The session of this connection once logged in (plaintext kept for re-checks)."""

    # --- output --------------------------------------------------------------------------

    def send(self, payload: str) -> None:
        """Queue a hub frame as readable lines in this connection's language (never blocks;
        see ``write``)."""
        self.write(render(payload, self.language))

    def write(self, lines: Sequence[str]) -> None:
        """Queue ``lines``; a client whose queue is full is not reading and is disconnected."""
        if self._closing or not lines:
            return
        if len(self._lines) + len(lines) > self.server.queue_size:
            self._drop_slow_reader()
            return
        self._lines.extend(lines)
        self._wake.set()

    def say(self, line: str) -> None:
        """Queue one line."""
        self.write((line,))

    def notice(self, message: Text | str) -> str:
        """The notice line of ``message`` in this connection's language."""
        return notice(self.locale, message)

    def error(self, message: Text | str) -> str:
        """The error line of ``message`` in this connection's language."""
        return error(self.locale, message)

    def tell(self, message: Text) -> None:
        """Queue a notice."""
        self.say(self.notice(message))

    def refuse(self, message: Text | str) -> None:
        """Queue an error line."""
        self.say(self.error(message))

    def speak(self, language: str) -> None:
        """Speak ``language`` (one of ``LANGUAGES``) from the next line on."""
        self.language = language
        self.locale = locale_for(language)

    def finish(self, line: str | None = None) -> None:
        """Queue a last ``line`` (even past the queue's bound), then close once everything
        queued is written; later output is dropped."""
        if self._closing:
            return
        if line is not None:
            self._lines.append(line)
        self._closing = True
        self._wake.set()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """End the connection because its session was revoked (``services.chat_sessions`` calls
        this, as it closes a WebSocket with 4001): SESSION_ENDED, then close."""
        self.finish(self.notice(SESSION_ENDED))

    def _drop_slow_reader(self) -> None:
        log.info("tcp chat: %s (%s) is not reading; disconnected", self.user or "-", self.ip)
        self.server.slow_readers_dropped += 1
        self._closing = True
        self._lines.clear()
        self.writer.transport.abort()  # the reader sees the end of input; run() cleans up

    async def _write_forever(self) -> None:
        """Write queued lines, waiting for the socket after every write (backpressure); close
        the connection after the last one once ``finish`` was called."""
        try:
            while True:
                if not self._lines:
                    if self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                data = "".join(f"{line}\r\n" for line in self._lines)
                self._lines.clear()
                self.writer.write(data.encode("utf-8", "replace"))
                await self.writer.drain()
            self.writer.close()
            await self.writer.wait_closed()
        except OSError:  # the client went away: nothing left to write to
            self.writer.transport.abort()

    # --- input ---------------------------------------------------------------------------

    async def read_raw(self) -> bytes | None:
        """The next line as bytes (ending included, if any), None at the end of input; a line
        longer than the reader's limit is answered with TOO_LONG and skipped."""
        skipping = False
        while True:
            try:
                chunk = await self.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:
                # The end of input; an unterminated last line still counts (printf | nc).
                return end.partial if end.partial and not skipping else None
            except asyncio.LimitOverrunError as overrun:
                # readuntil leaves the data in the buffer: drop it and keep dropping up to the
                # line's end, so the next line is read normally.
                await self.reader.readexactly(overrun.consumed)
                if not skipping:
                    self.refuse(TOO_LONG)
                skipping = True
                continue
            if not skipping:
                return chunk
            skipping = False  # that was the end of the long line

    async def next_line(self, deadline: float) -> str | None:
        """The next line of text without its ending, None at the end of input; TimeoutError
        when none arrives before ``deadline`` (loop time). Lines too long or not UTF-8 are
        answered with an error line and skipped."""
        while True:
            async with asyncio.timeout_at(deadline):
                raw = await self.read_raw()
            if raw is None:
                return None
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            if len(raw) > LINE_LIMIT:
                self.refuse(TOO_LONG)
                continue
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self.refuse(NOT_UTF8)

    # --- the conversation ----------------------------------------------------------------

    async def run(self) -> None:
        """Greet, log in, chat until the client leaves or is sent away; then leave the room
        and close."""
        self._write_task = asyncio.create_task(self._write_forever())
        try:
            self.say(greeting(self.language))
            user = await self._log_in()
            if user is None or self._closing:
                return
            self.user = user
            if not await self._session_alive():  # revoked before it was registered
                return
            self.tell(
                Text("hello {name}; you are in {room}. Try /help", name=user, room=DEFAULT_ROOM)
            )
            await self._enter(DEFAULT_ROOM)
            await self._chat()
        except Exception:
            log.exception("tcp chat: %s (%s) failed", self.user or "-", self.ip)
            self.finish(self.error(Text("server error; goodbye")))
        finally:
            await self._leave()
            await self._close()
            await self._end_session()

    async def _log_in(self) -> str | None:
        """The name of the user who logged in, or None when the connection ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.login_timeout
        refusals = 0
        while not self._closing:
            try:
                line = await self.next_line(deadline)
            except TimeoutError:
                seconds = f"{self.server.login_timeout:g}"
                self.finish(
                    self.error(Text("no LOGIN within {seconds} seconds; goodbye", seconds=seconds))
                )
                return None
            if line is None:
                return None
            if not line.strip():
                continue
            keyword, _, rest = line.partition(" ")
            if keyword.upper() == "LANG":
                self._choose_language(rest, LANG_USAGE)
                continue
            if keyword.upper() != "LOGIN":
                self.refuse(LOGIN_HINT)
                continue
            credentials = parse_login(rest)
            try:
                request = LoginRequest.model_validate(
                    {"name": credentials[0], "pwd": credentials[1]} if credentials else {}
                )
            except ValidationError:
                self.refuse(LOGIN_USAGE)
                continue
            try:
                principal = await self._verify(request.name, request.pwd)
            except PermissionDenied:
                self.finish(
                    self.error(
                        Text(
                            "your roles do not grant the permission {permission}; goodbye",
                            permission=TCP_NEED,
                        )
                    )
                )
                return None
            except (InvalidCredentials, TooManyAttempts) as refused:
                refusals += 1
                self.refuse(refused.message)
                if refusals >= self.server.login_attempts:
                    self.finish(
                        self.notice(Text("too many failed logins on this connection; goodbye"))
                    )
                continue
            return principal.name
        return None

    async def _verify(self, name: str, password: str) -> Principal:
        """Log in as the API does (throttled, audited, hash upgraded) and check ``TCP_NEED``;
        returns who it is, with a session of this connection (registered so that its
        revocation ends the connection), or raises PermissionDenied (audited as
        ``login_denied``, no session)."""
        services = self.server.services
        async with services.sessions() as session, session.begin():
            accounts = Accounts(services, session, client_ip=self.ip)
            user = await accounts.check_password(name=name, password=password)
            bind_user(user.id)
            # From here on the account is known: its language, if it chose one, wins.
            self.speak(supported(user.language) or self._chosen or DEFAULT_LANGUAGE)
            role_ids = await UserRepository(session).role_ids(user.id)
            principal = Principal(
                user.id, user.name, user.is_superuser, frozenset(role_ids), language=user.language
            )
            if not await services.menus.permits(principal, TCP_NEED):
                await accounts.refuse_login(user, f"tcp chat: needs {TCP_NEED}")
                issued: IssuedLogin | None = None
            else:
                issued = await accounts.start_session(user, device=DEVICE, detail="tcp chat")
        if issued is None:
            raise PermissionDenied(TCP_NEED)
        self._token, self._token_hash = issued.token, issued.token_hash
        services.chat_sessions.add(issued.token_hash, self)
        self.principal = Principal(
            user.id,
            user.name,
            user.is_superuser,
            frozenset(role_ids),
            token_id=issued.row.id,
            language=user.language,
        )
        return self.principal

    async def _session_alive(self) -> bool:
        """Whether this connection's session still stands (through the login cache: no query
        while warm); when it has ended, say so and close. A database that cannot be asked
        leaves the connection open: revocation events still reach it."""
        if self._token is None:
            return False
        try:
            alive = await self.server.services.logins.resolve(self._token) is not None
        except TokenExpired:
            alive = False
        except Exception:
            log.warning("tcp chat: could not re-check the session of %s", self.user, exc_info=True)
            return True
        if not alive:
            self.close()
        return alive

    async def _end_session(self) -> None:
        """Revoke this connection's session (the client left or was sent away) and tell every
        process; a failure is logged (the session then expires like any idle one)."""
        token_hash, self._token_hash, self._token = self._token_hash, None, None
        if token_hash is None:
            return
        services = self.server.services
        services.chat_sessions.discard(token_hash, self)
        try:
            async with services.sessions() as session, session.begin():
                accounts = Accounts(services, session, client_ip=self.ip)
                await accounts.end_session(token_hash, detail="tcp chat")
            for event in accounts.events:
                await services.invalidation.publish(event)
        except Exception:
            log.warning("tcp chat: could not end the session of %s", self.user, exc_info=True)

    async def _chat(self) -> None:
        loop = asyncio.get_running_loop()
        idle = self.server.idle_seconds
        while not self._closing and self.room is not None:
            try:
                line = await self.next_line(loop.time() + idle)
            except TimeoutError:
                seconds = f"{idle:g}"
                self.finish(
                    self.notice(Text("no input for {seconds} seconds; goodbye", seconds=seconds))
                )
                return
            if line is None:
                return
            text = line.strip()
            if not text or self._closing or not self._within_rate():
                continue
            if not await self._session_alive():
                return
            if text.startswith("/"):
                await self._command(text)
            elif len(text) > MAX_TEXT_CHARS:
                self.refuse(
                    Text(
                        "a message holds at most {limit} characters; not sent",
                        limit=MAX_TEXT_CHARS,
                    )
                )
            else:
                await self._say(self.room, text)

    def _within_rate(self) -> bool:
        """Spend a token for a line; refuse it (and close after too many) when none is left."""
        if self._bucket.take():
            self._refusals = 0
            return True
        self._refusals += 1
        if self._refusals >= REFUSALS_BEFORE_CLOSE:
            self.finish(self.error(Text("too many lines too fast; goodbye")))
        else:
            rate = f"{self.server.rate_per_second:g}"
            self.refuse(
                Text(
                    "slow down: at most {rate} lines a second (bursts of {burst}); ignored",
                    rate=rate,
                    burst=self.server.rate_burst,
                )
            )
        return False

    async def _command(self, text: str) -> None:
        command, _, argument = text.partition(" ")
        argument = argument.strip()
        match command.lower():
            case "/who":
                room = self.room or DEFAULT_ROOM
                self.say(online_line(self.locale, room, await self.hub.online(room)))
            case "/rooms":
                await self._list_rooms()
            case "/support":
                await self._support()
            case "/join":
                if not ROOM_PATTERN.match(argument):
                    self.refuse(
                        Text("usage: /join ROOM (1 to 64 letters, digits, '_', '.' or '-')")
                    )
                elif argument == self.room:
                    self.tell(Text("you are already in {room}", room=argument))
                else:
                    await self._enter(argument)
            case "/lang":
                self._choose_language(
                    argument,
                    Text("usage: {command} {choices}", command="/lang", choices=LANGUAGE_CHOICES),
                )
            case "/quit":
                self.finish(self.notice(Text("bye")))
            case "/help":
                self.tell(HELP)
            case _:
                self.refuse(Text("unknown command {command}; try /help", command=clean(command)))

    def _choose_language(self, argument: str, usage: Text) -> None:
        """``LANG``/``/lang``: speak the language ``argument`` names (``en_US``, ``en``,
        ``zh-CN``...) on this connection, and say so in it."""
        language = supported(argument.strip())
        if language is None:
            self.refuse(usage)
            return
        self._chosen = language
        self.speak(language)
        self.tell(Text("language set to {language}", language=LANGUAGES[language]))

    async def _enter(self, room: str) -> None:
        """Leave the current room (if any) and join ``room``: history, then who is online (and
        a private room's state). A room the room policy refuses (``rooms.py``: someone else's
        support thread, the queue for a customer) is answered with an error line, and the user
        stays where they are."""
        principal = self.principal
        assert principal is not None  # rooms are entered after LOGIN
        rooms = self.server.services.rooms
        try:
            admission = await rooms.admit(principal, room)
        except RoomRefused as refused:
            self.refuse(refused.text)
            return
        await self._leave()
        self.room, self.admission = room, admission
        await self.hub.join(self, room)
        if admission is not None:
            await rooms.welcome(self, admission)

    async def _say(self, room: str, text: str) -> None:
        """Say ``text`` in ``room``: a private room's goes through the room policy (a support
        thread stores it with the thread's change, or refuses it once closed)."""
        if self.admission is None:
            await self.hub.say(self.user, room, text)
            return
        try:
            await self.server.services.rooms.say(self.admission, self.user, text)
        except RoomRefused as refused:
            self.refuse(refused.text)

    async def _list_rooms(self) -> None:
        """``/rooms``: the rooms this user may enter besides any public one."""
        assert self.principal is not None
        for listed in await self.server.services.rooms.listed(self.principal):
            self.tell(Text("{room}: {what}", room=listed.room, what=listed.what))

    async def _support(self) -> None:
        """``/support``: an agent enters the queue; anyone else their support conversation
        (opened when they have none)."""
        assert self.principal is not None
        support = self.server.services.support
        if await support.is_agent(self.principal):
            room = QUEUE_ROOM
        else:
            room = (await support.open_thread(self.principal)).room
        if room == self.room:
            self.tell(Text("you are already in {room}", room=room))
        else:
            await self._enter(room)

    async def _leave(self) -> None:
        room, self.room, self.admission = self.room, None, None
        if room is not None:
            try:
                await self.hub.leave(self, room)
            except Exception:
                log.exception("tcp chat: %s could not leave %s", self.user, room)

    async def _close(self) -> None:
        """Write what is queued (at most FLUSH_SECONDS), then close the connection."""
        self.finish()
        task = self._write_task
        if task is None:
            self.writer.transport.abort()
            return
        try:
            async with asyncio.timeout(FLUSH_SECONDS):
                await asyncio.shield(task)
        except TimeoutError:
            log.info("tcp chat: %s (%s) not reading at close; cut", self.user or "-", self.ip)
        finally:
            if not task.done():
                task.cancel()
                self.writer.transport.abort()

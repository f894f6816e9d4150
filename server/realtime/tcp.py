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
  except ``/who`` (who is online here), ``/join ROOM`` (leave this room for ROOM), ``/help`` and
  ``/quit``. Empty lines are ignored (and, like any input, keep the connection from going idle).
  Room names, the length of a message and the rate limit are the WebSocket's (``limits.py``:
  shared rooms, shared rules): an error line per refused line, and the connection is closed after
  REFUSALS_BEFORE_CLOSE rate-limited lines in a row.
- Server lines: ``[room] user: text`` for a message, ``* ...`` for notices (joins, leaves, who
  is online, history headers, goodbyes), ``! ...`` for errors.

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

from repositories.users import UserRepository
from schemas.user import LoginRequest
from server.accounts import Accounts, InvalidCredentials, IssuedLogin, TooManyAttempts
from server.logins import TokenExpired
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
from server.services import Services

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
GREETING = "* mservices chat. Log in with: LOGIN <name> <password>"
LOGIN_HINT = "! log in first: LOGIN <name> <password>"
LOGIN_USAGE = '! usage: LOGIN <name> <password> (a name with spaces in quotes: LOGIN "a b" pw)'
HELP = "* commands: /who (who is here), /join ROOM (change room), /quit; any other line is said"
TOO_LONG = f"! line too long (at most {LINE_LIMIT} bytes); ignored"
NOT_UTF8 = "! line is not valid UTF-8; ignored"
SESSION_ENDED = "* your session was ended; goodbye"
"""The last line of a connection whose session was revoked (logged out elsewhere)."""
DEVICE = "tcp"
"""The device of a TCP chat session in ``GET /user/sessions``."""

_CONTROL_CHARACTERS = {code: " " for code in (*range(0x20), *range(0x7F, 0xA0))}


def clean(value: object) -> str:
    """``value`` as text safe for a terminal: control characters (newlines, escapes) become
    spaces."""
    return str(value).translate(_CONTROL_CHARACTERS)


@functools.lru_cache(maxsize=4)
def render(payload: str) -> tuple[str, ...]:
    """The lines a TCP client sees for one hub frame (none for a frame it has no use for).

    The hub hands one payload to every member of a room in a row, so a tiny cache parses it
    once per broadcast rather than once per member.
    """
    try:
        frame = json.loads(payload)
    except ValueError:
        return ()
    if not isinstance(frame, dict):
        return ()
    room = clean(frame.get("room", ""))
    match frame.get("type"):
        case "message":
            return (_message_line(room, frame),)
        case "history":
            messages = [item for item in frame.get("messages") or () if isinstance(item, dict)]
            if not messages:
                return (f"* {room}: no messages yet",)
            count = "1 message" if len(messages) == 1 else f"{len(messages)} messages"
            return (
                f"* {room}: the last {count}",
                *(_message_line(room, message) for message in messages),
            )
        case "join":
            return (f"* {clean(frame.get('user', '?'))} joined {room}",)
        case "leave":
            return (f"* {clean(frame.get('user', '?'))} left {room}",)
        case "presence":
            users = frame.get("users") or []
            return (f"* online in {room}: {', '.join(clean(user) for user in users)}",)
        case "error":
            return (f"! {clean(frame.get('text', 'error'))}",)
    return ()


def _message_line(room: str, message: dict[str, Any]) -> str:
    return f"[{room}] {clean(message.get('user', '?'))}: {clean(message.get('text', ''))}"


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
        self._goodbye: str | None = None

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

    async def close(self, goodbye: str) -> None:
        """Stop accepting, send every client ``goodbye``, and wait (at most ``close_seconds``)
        for the connections to be written out and closed; cut those that are not."""
        self._goodbye = goodbye
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.finish(goodbye)
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
        connection = _Connection(self, reader, writer)
        handler = asyncio.current_task()
        assert handler is not None  # start_server runs this callback in a task
        self._connections.add(connection)
        self._handlers.add(handler)
        try:
            if self._goodbye is not None:  # accepted just as the server was closing
                connection.finish(self._goodbye)
            await connection.run()
        except Exception:
            log.exception("tcp chat: connection from %s failed", connection.ip)
        finally:
            self._connections.discard(connection)
            self._handlers.discard(handler)


class _Connection:
    """One TCP client; once logged in, a hub member (``user`` and a non-blocking ``send``)."""

    def __init__(
        self, server: TcpChatServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.hub = server.services.hub
        self.reader = reader
        self.writer = writer
        self.user = ""
        self.room: str | None = None
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
        """Queue a hub frame as readable lines (never blocks; see ``write``)."""
        self.write(render(payload))

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
        self.finish(SESSION_ENDED)

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
                    self.say(TOO_LONG)
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
                self.say(TOO_LONG)
                continue
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self.say(NOT_UTF8)

    # --- the conversation ----------------------------------------------------------------

    async def run(self) -> None:
        """Greet, log in, chat until the client leaves or is sent away; then leave the room
        and close."""
        self._write_task = asyncio.create_task(self._write_forever())
        try:
            self.say(GREETING)
            user = await self._log_in()
            if user is None or self._closing:
                return
            self.user = user
            if not await self._session_alive():  # revoked before it was registered
                return
            self.say(f"* hello {user}; you are in {DEFAULT_ROOM}. Try /help")
            await self._enter(DEFAULT_ROOM)
            await self._chat()
        except Exception:
            log.exception("tcp chat: %s (%s) failed", self.user or "-", self.ip)
            self.finish("! server error; goodbye")
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
                self.finish(f"! no LOGIN within {self.server.login_timeout:g} seconds; goodbye")
                return None
            if line is None:
                return None
            if not line.strip():
                continue
            keyword, _, rest = line.partition(" ")
            if keyword.upper() != "LOGIN":
                self.say(LOGIN_HINT)
                continue
            credentials = parse_login(rest)
            try:
                request = LoginRequest.model_validate(
                    {"name": credentials[0], "pwd": credentials[1]} if credentials else {}
                )
            except ValidationError:
                self.say(LOGIN_USAGE)
                continue
            try:
                principal = await self._verify(request.name, request.pwd)
            except PermissionDenied:
                self.finish(f"! your roles do not grant the permission {TCP_NEED}; goodbye")
                return None
            except (InvalidCredentials, TooManyAttempts) as refused:
                refusals += 1
                self.say(f"! {refused.message}")
                if refusals >= self.server.login_attempts:
                    self.finish("* too many failed logins on this connection; goodbye")
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
            role_ids = await UserRepository(session).role_ids(user.id)
            principal = Principal(user.id, user.name, user.is_superuser, frozenset(role_ids))
            if not await services.menus.permits(principal, TCP_NEED):
                await accounts.refuse_login(user, f"tcp chat: needs {TCP_NEED}")
                issued: IssuedLogin | None = None
            else:
                issued = await accounts.start_session(user, device=DEVICE, detail="tcp chat")
        if issued is None:
            raise PermissionDenied(TCP_NEED)
        self._token, self._token_hash = issued.token, issued.token_hash
        services.chat_sessions.add(issued.token_hash, self)
        return Principal(
            user.id, user.name, user.is_superuser, frozenset(role_ids), token_id=issued.row.id
        )

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
                self.finish(f"* no input for {idle:g} seconds; goodbye")
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
                self.say(f"! a message holds at most {MAX_TEXT_CHARS} characters; not sent")
            else:
                await self.hub.say(self.user, self.room, text)

    def _within_rate(self) -> bool:
        """Spend a token for a line; refuse it (and close after too many) when none is left."""
        if self._bucket.take():
            self._refusals = 0
            return True
        self._refusals += 1
        if self._refusals >= REFUSALS_BEFORE_CLOSE:
            self.finish("! too many lines too fast; goodbye")
        else:
            server = self.server
            self.say(
                f"! slow down: at most {server.rate_per_second:g} lines a second "
                f"(bursts of {server.rate_burst}); ignored"
            )
        return False

    async def _command(self, text: str) -> None:
        command, _, argument = text.partition(" ")
        argument = argument.strip()
        match command.lower():
            case "/who":
                room = self.room or DEFAULT_ROOM
                self.say(f"* online in {room}: {', '.join(await self.hub.online(room))}")
            case "/join":
                if not ROOM_PATTERN.match(argument):
                    self.say("! usage: /join ROOM (1 to 64 letters, digits, '_', '.' or '-')")
                elif argument == self.room:
                    self.say(f"* you are already in {argument}")
                else:
                    await self._enter(argument)
            case "/quit":
                self.finish("* bye")
            case "/help":
                self.say(HELP)
            case _:
                self.say(f"! unknown command {clean(command)}; try /help")

    async def _enter(self, room: str) -> None:
        """Leave the current room (if any) and join ``room``: history, then who is online."""
        await self._leave()
        self.room = room
        await self.hub.join(self, room)

    async def _leave(self) -> None:
        room, self.room = self.room, None
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

"""The realtime protocols as data: the chat WebSocket ``/message`` and the TCP chat.

OpenAPI has no words for a WebSocket's frames or a line protocol, so ``realtime_protocols``
describes both in the shape of an AsyncAPI channel (what the client sends, what the server
sends, how it ends) and ``server.routes`` puts it into the OpenAPI document as ``x-realtime``;
``/docs`` renders it. Every limit, close code and fixed line is taken from the modules that
enforce or send it, so the description cannot drift from them; the tests compare the frame
types and commands listed here with those the code sends and accepts.

This is developer reference, so it is written in English (like the rest of the API reference
on ``/docs``) and not translated; the sentences the server sends to a person (error frames, TCP
notices) are, and the fixed lines below show their English form.
"""

from __future__ import annotations

from typing import Any

from server.i18n import DEFAULT_LANGUAGE
from server.permissions import CHAT_USE, SUPPORT_ANSWER
from server.realtime.hub import DEFAULT_ROOM, HISTORY_ON_JOIN, RESUME_LIMIT
from server.realtime.limits import (
    MAX_TEXT_CHARS,
    RATE_BURST,
    RATE_PER_SECOND,
    REFUSALS_BEFORE_CLOSE,
    ROOM_PATTERN,
)
from server.realtime.pings import CLOSE_NORMAL, PING_INTERVAL
from server.realtime.rooms import PRIVATE_PREFIX, QUEUE_ROOM
from server.realtime.sessions import CLOSE_SESSION_ENDED
from server.realtime.tcp import (
    DEVICE,
    ERROR,
    GREETING,
    HELP,
    LANG_USAGE,
    LANGUAGE_CHOICES,
    LINE_LIMIT,
    LOGIN_ATTEMPTS,
    LOGIN_HINT,
    LOGIN_TIMEOUT,
    LOGIN_USAGE,
    NOT_UTF8,
    NOTICE,
    QUEUE_SIZE,
    SESSION_ENDED,
    SHUTTING_DOWN,
    TCP_NEED,
    TOO_LONG,
    language_switch,
)
from server.realtime.websocket import (
    CHAT_SUBPROTOCOL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SLOW_CONSUMER,
    FRAME_SHAPE,
    LAST_ID_PATTERN,
    MAX_FRAME_BYTES,
    SEND_BUFFER_BYTES,
)

CLOSE_TOO_BIG = 1009
"""Tornado's close code for a frame over ``max_message_size``."""

MESSAGE_FIELDS = [
    {"name": "user", "type": "string", "description": "the name of the user who said it"},
    {"name": "text", "type": "string", "description": "the message"},
    {"name": "ts", "type": "number", "description": "Unix time in seconds, with a fraction"},
    {
        "name": "id",
        "type": "integer",
        "description": "the message id, growing in the order messages were sent; "
        "send it back as last_id when reconnecting",
    },
    {
        "name": "staff",
        "type": "boolean",
        "description": "present (true) only on what support staff said in a support "
        "conversation: show a badge",
    },
]
PRIVATE_ROOMS = (
    f"Rooms named `{PRIVATE_PREFIX}...` (in any case) are private: `{PRIVATE_PREFIX}<id>` is "
    f"a support conversation, entered only by its customer and holders of `{SUPPORT_ANSWER}`; "
    f"`{QUEUE_ROOM}` is the agents' live queue (holders of `{SUPPORT_ANSWER}` only); any other "
    "such name is nobody's. Every other room is public."
)
THREAD_EXAMPLE = {
    "id": 7,
    "room": "support-7",
    "customer": "carol",
    "status": "answered",
    "version": 3,
    "created_at": "2026-12-06T08:00:00Z",
    "updated_at": "2026-12-06T08:02:10Z",
    "closed_at": None,
    "last_message": {"user": "ann", "text": "it ships today", "ts": 1796544130.0, "staff": True},
}
LANGUAGE = (
    "the language of the person reading: the account's choice, else the `mservices_lang` "
    "cookie, else `Accept-Language`, else Chinese"
)


def _frame(
    kind: str, description: str, fields: list[dict[str, str]], example: Any
) -> dict[str, Any]:
    room = {"name": "room", "type": "string", "description": "the room"}
    kind_field = {"name": "type", "type": "string", "description": f"always {kind}"}
    return {
        "type": kind,
        "description": description,
        "fields": [kind_field, room, *fields],
        "example": example,
    }


def websocket_protocol() -> dict[str, Any]:
    """The chat WebSocket ``/message``: handshake, client frames, server frames, close codes."""
    message = {"user": "ann", "text": "你好", "ts": 1714550400.25, "id": 42}
    return {
        "path": "/message",
        "permission": CHAT_USE,
        "subprotocol": CHAT_SUBPROTOCOL,
        "authentication": (
            "The handshake authenticates with the session cookie of a browser that logged in "
            "(bearer tokens are not accepted): 401 without a valid session, 403 when the "
            f"user's roles do not grant `{CHAT_USE}`. Only the site's own Origin and those in "
            "the `ws_origins` setting are accepted, else 403. Compression is never negotiated. "
            f"Offer the subprotocol `{CHAT_SUBPROTOCOL}` (`Sec-WebSocket-Protocol`) to get the "
            "UTF-8 JSON frames described below. A client that offers none (the seed's page, "
            "`new WebSocket(url)`) shares the same rooms, history and limits in the seed's "
            "plain text instead: every text frame it sends is the message, and it receives one "
            "line per frame, HTML-escaped (`&`, `<`, `>`): `NAME says: TEXT` for a message and "
            "for each message of the history, `NAME joined the chat room` and `NAME left the "
            "chat room`, an error frame's text on its own, and no presence (in Chinese, exactly "
            "the seed's lines). Error frames and plain lines are in "
            f"{LANGUAGE}, taken from the handshake request."
        ),
        "query": [
            {
                "name": "room",
                "required": False,
                "pattern": ROOM_PATTERN.pattern,
                "default": DEFAULT_ROOM,
                "description": "the room to enter: 1 to 64 letters (of any script), digits, "
                "_, . or -; otherwise the handshake is answered with 400. "
                + PRIVATE_ROOMS
                + " Entering (or resuming) a private room you may not enter, or one that does "
                "not exist, is answered with 403",
            },
            {
                "name": "last_id",
                "required": False,
                "pattern": LAST_ID_PATTERN.pattern,
                "description": "the id of the last message received, when reconnecting: the "
                f"history frame then holds only the messages missed since (at most "
                f"{RESUME_LIMIT}); otherwise the handshake is answered with 400",
            },
        ],
        "client_frames": [
            {
                "type": "message",
                "description": "say something in the current room",
                "fields": [
                    {"name": "type", "type": "string", "description": "always message"},
                    {
                        "name": "text",
                        "type": "string",
                        "description": f"the message, not blank, at most {MAX_TEXT_CHARS} "
                        "characters",
                    },
                ],
                "example": {"type": "message", "text": "你好"},
            },
            {
                "type": "(plain text)",
                "description": "a text frame that is not a JSON object is the message itself "
                "(without the subprotocol, every text frame is, as the seed's page sends it)",
                "fields": [],
                "example": "你好",
            },
        ],
        "server_frames": [
            _frame(
                "history",
                f"the first frame after entering a room: its last {HISTORY_ON_JOIN} messages; "
                f"after a reconnect with last_id, the messages missed since (at most "
                f"{RESUME_LIMIT})",
                [
                    {
                        "name": "messages",
                        "type": "array",
                        "description": "the messages, oldest first, each with user, text, ts "
                        "and id",
                    },
                    {
                        "name": "recovered",
                        "type": "boolean",
                        "description": "false: more messages were missed than can be sent "
                        "again; some are missing",
                    },
                ],
                {"type": "history", "room": DEFAULT_ROOM, "messages": [message], "recovered": True},
            ),
            _frame(
                "message",
                "someone said something in the room (your own messages come back too); each id "
                "comes once. When Redis comes back after an outage, the messages missed meanwhile "
                "come first, oldest first, then live ones",
                MESSAGE_FIELDS,
                {"type": "message", "room": DEFAULT_ROOM, **message},
            ),
            _frame(
                "join",
                "a user's first connection to this room came in",
                [
                    {"name": "user", "type": "string", "description": "the user's name"},
                    {"name": "ts", "type": "number", "description": "Unix time in seconds"},
                ],
                {"type": "join", "room": DEFAULT_ROOM, "user": "ann", "ts": 1714550400.0},
            ),
            _frame(
                "leave",
                "a user's last connection to this room left",
                [
                    {"name": "user", "type": "string", "description": "the user's name"},
                    {"name": "ts", "type": "number", "description": "Unix time in seconds"},
                ],
                {"type": "leave", "room": DEFAULT_ROOM, "user": "ann", "ts": 1714550400.0},
            ),
            _frame(
                "presence",
                "who is online now: sent to you after you enter a room, and to everyone in the "
                "room after Redis reconnects",
                [{"name": "users", "type": "array", "description": "the names of the users"}],
                {"type": "presence", "room": DEFAULT_ROOM, "users": ["ann", "bob"]},
            ),
            _frame(
                "thread",
                f"a support conversation changed (a message, or it was closed): sent to its "
                f"room and to `{QUEUE_ROOM}`, and to you when you enter the conversation. "
                "Keep the copy with the highest version",
                [
                    {
                        "name": "thread",
                        "type": "object",
                        "description": "the conversation as `GET /api/support/threads/{id}` "
                        "returns it (`ThreadRead`): id, room, customer, status (new, waiting, "
                        "answered, closed), version, times, last_message",
                    }
                ],
                {"type": "thread", "room": QUEUE_ROOM, "thread": THREAD_EXAMPLE},
            ),
            _frame(
                "agents",
                "in a support conversation: whether a support agent is online (has the "
                "queue open); sent when you enter and whenever it changes",
                [{"name": "online", "type": "boolean", "description": "an agent is online"}],
                {"type": "agents", "room": "support-7", "online": True},
            ),
            _frame(
                "error",
                "to the sender only: that message was refused (the connection stays open)",
                [
                    {"name": "code", "type": "string", "description": "why, see the table below"},
                    {
                        "name": "text",
                        "type": "string",
                        "description": f"the explanation for a person, in {LANGUAGE}",
                    },
                    {"name": "ts", "type": "number", "description": "Unix time in seconds"},
                ],
                {
                    "type": "error",
                    "room": DEFAULT_ROOM,
                    "code": "too_long",
                    "text": f"a message holds at most {MAX_TEXT_CHARS} characters",
                    "ts": 1714550400.0,
                },
            ),
        ],
        "error_codes": [
            {
                "code": "closed",
                "description": "the support conversation is closed: nothing more is said in it "
                "(open support again for a new one)",
            },
            {
                "code": "read_only",
                "description": f"nobody speaks in `{QUEUE_ROOM}`: enter a conversation to answer",
            },
            {
                "code": "bad_frame",
                "description": f"a binary frame, a JSON object that is not {FRAME_SHAPE}, "
                "or one nested too deep",
            },
            {"code": "empty", "description": "the message is empty or only white space"},
            {"code": "too_long", "description": f"more than {MAX_TEXT_CHARS} characters"},
            {
                "code": "bad_text",
                "description": "the text holds a lone surrogate: it is not valid Unicode",
            },
            {
                "code": "rate_limited",
                "description": f"too fast: {RATE_PER_SECOND:g} messages a second on average, "
                f"bursts of at most {RATE_BURST}",
            },
            {
                "code": "unavailable",
                "description": "entering the room failed (the database is away, say); the "
                "socket is then closed with 1011. In a support conversation: the message could "
                "not be stored, and was not sent (the socket stays open)",
            },
        ],
        "close_codes": [
            {
                "code": CLOSE_NORMAL,
                "reason": "ping timed out",
                "description": f"the server pings every {PING_INTERVAL:g} seconds and the "
                "client did not answer",
            },
            {
                "code": CLOSE_GOING_AWAY,
                "reason": "server shutting down",
                "description": "the server is stopping",
            },
            {
                "code": CLOSE_POLICY_VIOLATION,
                "reason": "rate limit exceeded",
                "description": f"{REFUSALS_BEFORE_CLOSE} messages in a row were refused as too "
                "fast",
            },
            {
                "code": CLOSE_TOO_BIG,
                "reason": "",
                "description": f"a frame over {MAX_FRAME_BYTES} bytes",
            },
            {
                "code": CLOSE_INTERNAL_ERROR,
                "reason": "chat unavailable",
                "description": "entering the room failed",
            },
            {
                "code": CLOSE_SESSION_ENDED,
                "reason": "session ended",
                "description": "the session was logged out or revoked (logging out, a password "
                "change, an administrator deactivating the user): log in again, do not "
                "reconnect",
            },
            {
                "code": CLOSE_SLOW_CONSUMER,
                "reason": "slow consumer",
                "description": f"the client reads too slowly: more than {SEND_BUFFER_BYTES} "
                "bytes are waiting to be sent",
            },
        ],
    }


def _notice(line: str) -> str:
    return NOTICE + line


def tcp_protocol() -> dict[str, Any]:
    """The TCP chat: connection, login, commands, server lines, limits."""
    return {
        "setting": "tcp_port",
        "permission": TCP_NEED,
        "encoding": (
            "UTF-8 text, one line per message; the client ends lines with LF or CRLF, the "
            "server with CRLF. nc, telnet or a few lines of socket code can connect; passwords "
            "travel in clear text, so open the port only on a trusted network."
        ),
        "login": (
            f"On connect the server sends a greeting; `LOGIN <name> <password>` must follow "
            f"within {LOGIN_TIMEOUT:g} seconds. The password is everything after the first "
            "space after the name (it may hold spaces); a name with spaces is written in "
            'double quotes: `LOGIN "ann lee" secret`. Accounts and throttling are the API\'s; '
            f"after {LOGIN_ATTEMPTS} failed logins the connection is closed; the roles must "
            f"grant `{TCP_NEED}`. Every login is a session (device `{DEVICE}`), listed in "
            "`GET /user/sessions`: revoking it ends the connection, and the connection's end "
            "revokes it. The server's sentences (after `* ` and `! `) are in the "
            f"connection's language: Chinese until `LANG {LANGUAGE_CHOICES}` (before LOGIN), "
            "then the language the account has chosen, if any (it wins over LANG); `/lang` "
            "switches the connection afterwards. Messages, names, rooms and commands are never "
            "translated; the lines below are shown in English."
        ),
        "commands": [
            {"command": "LOGIN <name> <password>", "description": "log in (before login only)"},
            {
                "command": f"LANG {LANGUAGE_CHOICES}",
                "description": "the language of the server's lines (before login only)",
            },
            {"command": "/who", "description": "who is online in the current room"},
            {
                "command": "/join ROOM",
                "description": "leave the current room for ROOM (room names as on the WebSocket; "
                "a private room you may not enter is refused with an error line)",
            },
            {
                "command": "/rooms",
                "description": "the rooms you may enter besides any public one: the lobby, your "
                f"support conversations; for holders of `{SUPPORT_ANSWER}`, `{QUEUE_ROOM}` and "
                "every open conversation, with where it stands",
            },
            {
                "command": "/support",
                "description": "talk to support: enter your conversation (opened if you have "
                f"none); for holders of `{SUPPORT_ANSWER}`, enter the queue, whose "
                "conversations' changes are shown as notices",
            },
            {
                "command": f"/lang {LANGUAGE_CHOICES}",
                "description": "the language of the server's lines on this connection",
            },
            {"command": "/help", "description": "list the commands"},
            {"command": "/quit", "description": "leave"},
            {
                "command": "(any other line)",
                "description": f"said in the current room (at most {MAX_TEXT_CHARS} "
                "characters); blank lines are ignored",
            },
        ],
        "server_lines": [
            {
                "line": "[room] user: text",
                "description": "a message (control characters in others' text become spaces)",
            },
            {
                "line": NOTICE + "...",
                "description": "a notice: joins, leaves, who is online, history, goodbyes",
            },
            {"line": ERROR + "...", "description": "an error: that line was refused or ignored"},
        ],
        "fixed_lines": [
            {
                "line": f"{NOTICE}{GREETING} {language_switch(DEFAULT_LANGUAGE)}",
                "description": "the greeting on connect",
            },
            {
                "line": ERROR + str(LOGIN_HINT),
                "description": "something other than LOGIN came before login",
            },
            {"line": ERROR + str(LOGIN_USAGE), "description": "a malformed LOGIN line"},
            {
                "line": ERROR + str(LANG_USAGE),
                "description": "a LANG line naming no language offered",
            },
            {
                "line": _notice(f"hello <name>; you are in {DEFAULT_ROOM}. Try /help"),
                "description": "logged in, in the default room",
            },
            {
                "line": _notice("<room>: the last N messages"),
                "description": "entering a room: the last messages follow",
            },
            {"line": _notice("<room>: no messages yet"), "description": "entering an empty room"},
            {
                "line": _notice("<user> joined <room>") + " / " + _notice("<user> left <room>"),
                "description": "someone came in or left",
            },
            {
                "line": _notice("online in <room>: a, b"),
                "description": "who is online (after entering a room, and for /who)",
            },
            {"line": _notice("language set to English"), "description": "after LANG or /lang"},
            {"line": _notice(str(HELP)), "description": "the answer to /help"},
            {"line": ERROR + str(TOO_LONG), "description": "a line too long, skipped"},
            {"line": ERROR + str(NOT_UTF8), "description": "not valid UTF-8, skipped"},
            {
                "line": _notice(str(SESSION_ENDED)),
                "description": "the session was revoked elsewhere; the connection closes",
            },
            {
                "line": _notice(str(SHUTTING_DOWN)),
                "description": "the server is stopping; the connection closes",
            },
        ],
        "limits": [
            {"name": "line length", "value": f"{LINE_LIMIT} bytes (without the line ending)"},
            {"name": "message length", "value": f"{MAX_TEXT_CHARS} characters"},
            {
                "name": "rate",
                "value": f"{RATE_PER_SECOND:g} lines a second on average, bursts of "
                f"{RATE_BURST}; after {REFUSALS_BEFORE_CLOSE} refused lines in a row the "
                "connection is closed",
            },
            {
                "name": "idle",
                "value": "closed after the setting tcp_idle_seconds seconds without input",
            },
            {
                "name": "output queue",
                "value": f"{QUEUE_SIZE} lines; a client that stops reading is disconnected "
                "when it is full",
            },
        ],
    }


def realtime_protocols() -> dict[str, Any]:
    """Both protocols, as the OpenAPI document's ``x-realtime``."""
    return {"websocket": websocket_protocol(), "tcp": tcp_protocol()}

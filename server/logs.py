"""Logging set-up: readable text lines, or one JSON object per line (``MSERVICES_LOG_FORMAT``).

A JSON line always has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; access
lines add the request's fields (``status``, ``method``, ``path``, ``duration_ms``,
``request_id``, ``remote_ip``) passed as ``extra={"request": {...}}``; a logged
exception adds ``exception`` (the formatted traceback).

Every line written while a request, a WebSocket message or a TCP chat command is handled also
carries who it is about: ``request_id`` and, once the caller is known, ``user_id`` (JSON
fields; ``rid=... uid=...`` at the end of a text line's first line, so a traceback's heading
names its request). They live in a ``ContextVar`` (:func:`bind_request`, :func:`bind_user`)
that :class:`ContextFilter` copies onto each record. asyncio gives every task its own copy of
the context, taken when the task is created: Tornado runs each request in a task of its own,
so what one request binds is never seen by another, and work a request starts in the
background (``Services.spawn``) logs as that request.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_FIELD = "request"
"""The ``extra`` key whose dict of request fields a JSON line carries."""
TEXT_LABELS = {"request_id": "rid", "user_id": "uid"}
"""How a text line names the context fields."""
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
"""What a client's ``X-Request-Id`` must look like to be kept (it ends up in log lines)."""


@dataclass(frozen=True, slots=True)
class LogContext:
    """Who the current log lines are about: a request (or socket, or TCP connection) and,
    once known, its user."""

    request_id: str | None = None
    user_id: int | None = None


NO_CONTEXT = LogContext()
_log_context: contextvars.ContextVar[LogContext] = contextvars.ContextVar(
    "mservices_log_context", default=NO_CONTEXT
)


def request_id_from(incoming: str | None) -> str:
    """The client's request id when it is a sane token (letters, digits, ``._-``, at most 64
    characters), else a fresh one (32 hex digits)."""
    if incoming and REQUEST_ID_PATTERN.match(incoming):
        return incoming
    return new_request_id()


def new_request_id(prefix: str = "") -> str:
    """A fresh id: ``prefix`` and 32 hex digits (``tcp-`` names a TCP chat connection)."""
    return prefix + uuid.uuid4().hex


def bind_request(request_id: str, user_id: int | None = None) -> None:
    """From here on in this task, and in the tasks it starts, log lines carry ``request_id``
    (and ``user_id``)."""
    _log_context.set(LogContext(request_id, user_id))


def bind_user(user_id: int | None) -> None:
    """Add the caller's user id to the current log context (the request id stays)."""
    current = _log_context.get()
    if current.user_id != user_id:
        _log_context.set(LogContext(current.request_id, user_id))


def log_context() -> LogContext:
    """The request and user the current log lines are about (empty outside a request)."""
    return _log_context.get()


def detached(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``call(*args, **kwargs)`` outside any request's log context: a task it starts (work of
    the whole process that a request merely happens to start first, such as the socket pings)
    does not log as that request forever after."""
    context = contextvars.copy_context()
    context.run(_log_context.set, NO_CONTEXT)
    return context.run(call, *args, **kwargs)


class ContextFilter(logging.Filter):
    """Copies the log context onto each record as ``request_id`` and ``user_id`` (None when
    unset; a record that already has them keeps its own). Installed on the handler, so it sees
    records of every logger, Tornado's and SQLAlchemy's included."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record``; never drops it."""
        context = _log_context.get()
        if getattr(record, "request_id", None) is None:
            record.request_id = context.request_id
        if getattr(record, "user_id", None) is None:
            record.user_id = context.user_id
        return True


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """``request_id`` and ``user_id`` of ``record`` (set by ContextFilter), those that are set."""
    fields: dict[str, Any] = {}
    for name in ("request_id", "user_id"):
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    return fields


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, with ``rid=... uid=...`` (those set) ending the first line of the
    message, before any traceback. An access line names its request id itself, so only its
    user id is added."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The formatted first part of the line, with the context appended to its first line."""
        line = super().formatMessage(record)
        fields = context_fields(record)
        access = getattr(record, REQUEST_FIELD, None)
        if isinstance(access, dict) and access.get("request_id") is not None:
            fields.pop("request_id", None)
        if not fields:
            return line
        suffix = " ".join(f"{TEXT_LABELS[name]}={value}" for name, value in fields.items())
        first, newline, rest = line.partition("\n")
        return f"{first} {suffix}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON: time, level, logger, message, request and user ids, request
        fields, exception."""
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, REQUEST_FIELD, None)
        if isinstance(fields, dict):
            entry.update(fields)
        # After the access fields: a handler without an id of its own gives None there.
        entry.update(context_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(log_format: Literal["text", "json"], *, level: int = logging.INFO) -> None:
    """Send every record to stderr in ``log_format``, with its request and user ids, replacing
    earlier handlers."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for previous in list(root.handlers):
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_driver_notes()


def quiet_driver_notes() -> None:
    """Hide MariaDB's notes, which asyncmy logs as warnings: "Can't drop database ...; database
    doesn't exist" for ``IF EXISTS``, "Name 'pk_x' ignored for PRIMARY key" for every migrated
    table. They describe nothing wrong; the driver's errors still show."""
    logging.getLogger("asyncmy").setLevel(logging.ERROR)

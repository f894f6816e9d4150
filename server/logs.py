"""Logging set-up: readable text lines, or one JSON object per line (``MSERVICES_LOG_FORMAT``).

A JSON line always has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; access
lines add the request's fields (``status``, ``method``, ``path``, ``duration_ms``,
``request_id``, ``remote_ip``) passed as ``extra={"request": {...}}``; a logged
exception adds ``exception`` (the formatted traceback).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_FIELD = "request"
"""The ``extra`` key whose dict of request fields a JSON line carries."""


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON: time, level, logger, message, request fields, exception."""
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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(log_format: Literal["text", "json"], *, level: int = logging.INFO) -> None:
    """Send every record to stderr in ``log_format``, replacing earlier handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
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

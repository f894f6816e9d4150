"""Log formats: readable text, or one JSON object per line with the request's fields."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from server.logs import REQUEST_FIELD, TEXT_FORMAT, JsonFormatter, configure_logging


def record(message: str, **extra: object) -> logging.LogRecord:
    """A log record of ``mservices.test`` at INFO with ``extra`` attributes."""
    made = logging.LogRecord("mservices.test", logging.INFO, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_json_line_has_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("hello %s"))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO"
    assert entry["logger"] == "mservices.test"
    assert entry["message"] == "hello %s"
    assert entry["time"].endswith("+00:00")


def test_an_access_line_carries_the_request_fields() -> None:
    fields = {"status": 201, "method": "POST", "path": "/user", "remote_ip": "203.0.113.7"}
    entry = json.loads(JsonFormatter().format(record("201 POST /user", **{REQUEST_FIELD: fields})))
    assert {key: entry[key] for key in fields} == fields


def test_an_exception_is_one_json_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize(("log_format", "kind"), [("json", JsonFormatter), ("text", None)])
def test_configure_logging_installs_one_handler_with_the_format(
    log_format: str, kind: type[logging.Formatter] | None
) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging(log_format)  # type: ignore[arg-type]
        assert len(root.handlers) == 1
        formatter = root.handlers[0].formatter
        assert formatter is not None
        if kind is not None:
            assert isinstance(formatter, kind)
        else:
            assert formatter._fmt == TEXT_FORMAT
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)

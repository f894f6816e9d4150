"""Errors at the HTTP edge: ``ApiError``, and the one mapping from any exception to a response."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus

from sqlalchemy import exc as sa_exc
from tornado.web import HTTPError

from repositories.errors import DatabaseUnavailable, DomainError
from schemas.common import ErrorItem


class ApiError(HTTPError):
    """An HTTP error with a machine-readable code and, for validation, the offending fields."""

    def __init__(
        self,
        status_code: int,
        code: str,
        msg: str,
        *,
        errors: list[ErrorItem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, reason=None)
        self.code = code
        self.msg = msg
        self.errors = errors or []
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """What the client is told about a failure."""

    status: int
    code: str
    msg: str
    errors: list[ErrorItem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    expected: bool = True
    """False for bugs: those are logged with a traceback and answered with a generic 500."""


_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}

DATABASE_DOWN = "the database is unavailable; try again shortly"


def is_database_outage(error: BaseException) -> bool:
    """True when ``error`` means the database cannot be reached, rather than a bad statement."""
    if isinstance(error, DatabaseUnavailable | sa_exc.TimeoutError | ConnectionError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated or isinstance(
            error, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(error, OSError | asyncio.TimeoutError)


def classify(error: BaseException | None, status_code: int) -> ErrorResponse:
    """Map an exception (or a bare status) to the response the client receives."""
    if isinstance(error, ApiError):
        return ErrorResponse(error.status_code, error.code, error.msg, error.errors, error.headers)
    if isinstance(error, HTTPError):
        status = error.status_code
        reason = error.log_message if error.log_message and status < 500 else None
        return ErrorResponse(status, _default_code(status), reason or _phrase(status))
    if isinstance(error, DomainError):
        return ErrorResponse(error.status, error.code, error.message, headers=error.headers)
    if isinstance(error, sa_exc.IntegrityError):
        return ErrorResponse(409, "conflict", "the change conflicts with existing data")
    if error is not None and is_database_outage(error):
        return ErrorResponse(
            503, "database_unavailable", DATABASE_DOWN, headers={"Retry-After": "1"}
        )
    if error is not None:
        return ErrorResponse(500, "internal_error", "internal server error", expected=False)
    return ErrorResponse(status_code, _default_code(status_code), _phrase(status_code))


def _default_code(status: int) -> str:
    return _DEFAULT_CODES.get(status, "internal_error" if status >= 500 else "error")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"

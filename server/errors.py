"""Errors at the HTTP edge: ``ApiError``, and the one mapping from any exception to a response."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus

from sqlalchemy import exc as sa_exc
from tornado.web import HTTPError, MissingArgumentError

from repositories.errors import DatabaseUnavailable, DomainError
from schemas.text import Text

Message = Text | str
"""What a person reads: a ``Text`` is translated for the reader; a ``str`` is data, shown as
it is."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One reason a request was refused, tied to the field it concerns (empty for the body);
    the edge translates it into the envelope's ``ErrorItem``."""

    field: str
    reason: Message


class ApiError(HTTPError):
    """An HTTP error with a machine-readable code and, for validation, the offending fields."""

    def __init__(
        self,
        status_code: int,
        code: str,
        msg: Message,
        *,
        errors: list[FieldProblem] | None = None,
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
    msg: Message
    errors: list[FieldProblem] = field(default_factory=list)
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

DATABASE_DOWN = Text("the database is unavailable; try again shortly")


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
        if isinstance(error, MissingArgumentError):
            missing = Text("the field {name} is missing", name=error.arg_name)
            return ErrorResponse(status, _default_code(status), missing)
        return ErrorResponse(status, _default_code(status), _phrase(status, error.log_message))
    if isinstance(error, DomainError):
        return ErrorResponse(error.status, error.code, error.message, headers=error.headers)
    if isinstance(error, sa_exc.IntegrityError):
        return ErrorResponse(409, "conflict", Text("the change conflicts with existing data"))
    if error is not None and is_database_outage(error):
        return ErrorResponse(
            503, "database_unavailable", DATABASE_DOWN, headers={"Retry-After": "1"}
        )
    if error is not None:
        return ErrorResponse(500, "internal_error", Text("internal server error"), expected=False)
    return ErrorResponse(status_code, _default_code(status_code), _phrase(status_code))


def _default_code(status: int) -> str:
    return _DEFAULT_CODES.get(status, "internal_error" if status >= 500 else "error")


PHRASES = {
    400: Text("bad request"),
    401: Text("log in first"),
    403: Text("you may not do this"),
    404: Text("not found"),
    405: Text("this method is not allowed here"),
    409: Text("the change conflicts with existing data"),
    413: Text("the request is too large"),
    415: Text("this content type is not supported"),
    422: Text("the request is invalid"),
    429: Text("too many requests; try again later"),
    500: Text("internal server error"),
    502: Text("an upstream server failed"),
    503: Text("the service is unavailable; try again shortly"),
    504: Text("an upstream server did not answer in time"),
}
"""What a bare status says (Tornado's own errors, such as an XSRF refusal, carry English
``log_message`` text meant for logs; the reader gets the phrase, plus that text's gist)."""


def _phrase(status: int, detail: str | None = None) -> Message:
    # Tornado's XSRF refusals: "'_xsrf' argument missing from POST", "XSRF cookie does not
    # match POST argument", "'_xsrf' argument has invalid format".
    if detail and status < 500 and "xsrf" in detail.lower():
        return Text(
            "the _xsrf form field or X-XSRFToken header is missing or wrong; reload the page"
        )
    if status in PHRASES:
        return PHRASES[status]
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return Text("error")

"""Domain errors raised by repositories; the HTTP edge translates them into responses."""

from __future__ import annotations

from schemas.text import Text


class DomainError(Exception):
    """Base class of every error a repository raises on purpose; ``message`` is a ``Text``
    that the edge translates for the reader (``str(error)`` is the English sentence)."""

    code = "domain_error"
    status = 400
    """The HTTP status the edge answers with (repositories themselves know no HTTP)."""

    def __init__(self, message: Text | str, *, code: str | None = None) -> None:
        super().__init__(str(message))
        self.message = message
        self.headers: dict[str, str] = {}
        if code is not None:
            self.code = code


class NotFound(DomainError):
    """The row asked for does not exist."""

    code = "not_found"
    status = 404


class Unprocessable(DomainError):
    """The request is well formed but asks for something the rules do not allow (e.g. depth)."""

    code = "unprocessable"
    status = 422


class Conflict(DomainError):
    """The change would break a uniqueness or integrity rule."""

    code = "conflict"
    status = 409


class Forbidden(DomainError):
    """The caller may not make this change, whatever the data."""

    code = "forbidden"
    status = 403


class DatabaseUnavailable(Exception):
    """The database cannot be reached; the request may succeed once it returns."""

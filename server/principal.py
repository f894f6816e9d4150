"""The principal: who is making a request, as much as authorization needs to know."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    user_id: int
    name: str
    is_superuser: bool
    role_ids: frozenset[int]
    token_id: int | None = None
    language: str | None = None
    """The language chosen on the account (``server.i18n.LANGUAGES``), or None to follow the
    browser."""

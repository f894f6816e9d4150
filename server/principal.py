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

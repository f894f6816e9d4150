"""Schemas of permissions: a code validated against the registry, and the registry as JSON."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic.json_schema import WithJsonSchema

from schemas.common import Schema
from schemas.text import Text
from server.permissions import PERMISSIONS, is_permission


def _registered(value: str) -> str:
    if not is_permission(value):
        raise ValueError(Text("unknown permission '{code}'; see GET /api/permissions", code=value))
    return value


PermissionCode = Annotated[
    str,
    AfterValidator(_registered),
    WithJsonSchema({"type": "string", "enum": list(PERMISSIONS)}),
]
"""A permission code from ``server.permissions.PERMISSIONS``."""


class PermissionRead(Schema):
    """One permission: its code and what it allows."""

    code: str
    meaning: str = Field(description="What it allows, in the caller's language.")
    meaning_zh: str = Field(
        description="What it allows, in Chinese whatever the caller's language (kept for "
        "clients written before `meaning` followed the caller's language; prefer `meaning`)."
    )


class PermissionList(Schema):
    """Every permission mservices knows."""

    msg: Literal["success"] = "success"
    items: list[PermissionRead]
    count: int

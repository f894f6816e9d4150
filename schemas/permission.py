"""Schemas of permissions: a code validated against the registry, and the registry as JSON."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator
from pydantic.json_schema import WithJsonSchema

from schemas.common import Schema
from server.permissions import PERMISSIONS, is_permission


def _registered(value: str) -> str:
    if not is_permission(value):
        raise ValueError(f"unknown permission {value!r}; see GET /api/permissions")
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
    meaning: str
    meaning_zh: str


class PermissionList(Schema):
    """Every permission mservices knows."""

    msg: Literal["success"] = "success"
    items: list[PermissionRead]
    count: int

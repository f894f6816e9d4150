"""Schemas of the health endpoints."""

from __future__ import annotations

from typing import Literal

from schemas.common import Schema


class HealthRead(Schema):
    """The service answers and its database answers."""

    status: Literal["ok"] = "ok"

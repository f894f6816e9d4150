"""Schemas of the health endpoints."""

from __future__ import annotations

from typing import Literal

from schemas.common import Schema


class HealthRead(Schema):
    """The process is alive (it answers; no dependency is consulted)."""

    status: Literal["ok"] = "ok"


class ReadyRead(Schema):
    """Every dependency answers: ``checks`` names each one checked (``database``, ``redis``)."""

    status: Literal["ready"] = "ready"
    checks: dict[str, Literal["ok"]]

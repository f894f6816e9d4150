"""Health: ``/healthz`` answers when the process and its database answer."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.health import ping
from schemas.health import HealthRead
from server.handlers.base import ApiHandler
from server.openapi import Operation


class HealthHandler(ApiHandler):
    """``GET /healthz``: 200 ``{"status": "ok"}``, or 503 when the database is down."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Liveness: the process and its database answer", HealthRead, tags=("operations",)
        )
    }

    async def get(self) -> None:
        """Ping the database and report."""
        engine: AsyncEngine = self.services.engine
        await ping(engine)
        await self.respond(HealthRead())

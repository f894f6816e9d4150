"""Operations endpoints: ``/healthz`` (alive), ``/readyz`` (dependencies answer), ``/metrics``.

- ``/healthz`` consults nothing: it answers as long as the event loop does, so a database outage
  never makes a supervisor restart a healthy process.
- ``/readyz`` pings the database and, when configured, Redis; a load balancer stops sending
  traffic to a process that is not ready.
- ``/metrics`` is the Prometheus text exposition of this process. It is answered only to clients
  in ``MSERVICES_METRICS_ALLOW`` (default loopback): the client address is the one the proxy
  layer resolved, so behind nginx with ``XHEADERS`` an outside client is refused; scrape each
  process on its own port.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from repositories.errors import DatabaseUnavailable
from repositories.health import ping
from schemas.health import HealthRead, ReadyRead
from schemas.text import Text
from server.errors import ApiError, FieldProblem
from server.handlers.base import ApiHandler
from server.metrics import CONTENT_TYPE
from server.openapi import Operation
from server.proxies import Networks

REDIS_PING_TIMEOUT = 2.0


class HealthHandler(ApiHandler):
    """``GET /healthz``: 200 ``{"status": "ok"}`` while the process answers."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Liveness: the process answers (no dependency is checked)",
            HealthRead,
            tags=("operations",),
        )
    }

    async def get(self) -> None:
        """Report that the process is alive."""
        await self.respond(HealthRead())


class ReadyHandler(ApiHandler):
    """``GET /readyz``: 200 when the database (and Redis, when configured) answer, else 503
    with the envelope naming every failed check in ``errors``."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Readiness: the database and Redis (when configured) answer",
            ReadyRead,
            errors=(503,),
            tags=("operations",),
        )
    }

    async def get(self) -> None:
        """Check every dependency at once and report."""
        checks = {"database": self._database()}
        if self.services.redis is not None:
            checks["redis"] = self._redis()
        outcomes = await asyncio.gather(*checks.values())
        # The reasons are the drivers' own words (data for an operator), kept as they are.
        failed = [
            FieldProblem(name, problem)
            for name, problem in zip(checks, outcomes, strict=True)
            if problem is not None
        ]
        if failed:
            names = ", ".join(item.field for item in failed)
            raise ApiError(
                503, "not_ready", Text("not ready: {names} unavailable", names=names), errors=failed
            )
        await self.respond(ReadyRead(checks=dict.fromkeys(checks, "ok")))

    async def _database(self) -> str | None:
        try:
            await ping(self.services.engine)
        except DatabaseUnavailable as error:
            return str(error)
        return None

    async def _redis(self) -> str | None:
        redis = self.services.redis
        if redis is None:
            return None
        try:
            async with asyncio.timeout(REDIS_PING_TIMEOUT):
                await redis.ping()
        except Exception as error:
            return " ".join(str(error).split()) or type(error).__name__
        return None


class MetricsHandler(ApiHandler):
    """``GET /metrics``: this process's metrics in the Prometheus text format (allowed clients
    only; 403 with the envelope otherwise)."""

    async def get(self) -> None:
        """Send the exposition to an allowed client."""
        if self.request.remote_ip not in Networks(self.services.settings.metrics_allow):
            raise ApiError(
                403,
                "forbidden",
                Text("metrics are only served to MSERVICES_METRICS_ALLOW addresses"),
            )
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        await self.finish(self.services.metrics.exposition())

"""The API description: ``/openapi.json`` for machines and ``/docs`` for people."""

from __future__ import annotations

import json
from typing import Any

from server.handlers.base import ApiHandler, PageHandler
from server.permissions import Requirement
from server.services import Services


class OpenApiHandler(ApiHandler):
    """``GET /openapi.json``: the OpenAPI 3.1 document generated at start-up."""

    def initialize(  # type: ignore[override]
        self, services: Services, need: Requirement, document: dict[str, Any]
    ) -> None:
        """Receive the generated document."""
        super().initialize(services, need)
        self.document = document

    async def get(self) -> None:
        """Serve the document."""
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        await self.finish(json.dumps(self.document, ensure_ascii=False))


class DocsPageHandler(PageHandler):
    """``GET /docs``: every operation with its request and response schemas, server-rendered."""

    def initialize(  # type: ignore[override]
        self, services: Services, need: Requirement, document: dict[str, Any]
    ) -> None:
        """Receive the generated document."""
        super().initialize(services, need)
        self.document = document

    async def get(self) -> None:
        """Render ``docs.html``."""
        await self.render_page("docs.html", document=self.document, pretty=_pretty)


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False)

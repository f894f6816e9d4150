"""Pages anyone may open: the index, rendered with the menus the visitor may see."""

from __future__ import annotations

from server.handlers.base import PageHandler


class IndexPageHandler(PageHandler):
    """``GET /``: the home page (seed §6) with the ``Nav`` and ``Menu`` UI modules."""

    async def get(self) -> None:
        """Render ``index.html``."""
        await self.render_page("index.html")

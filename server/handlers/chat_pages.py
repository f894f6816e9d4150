"""The realtime pages: the chat room (``/chat`` and the seed's ``/robbit``) and the ticker."""

from __future__ import annotations

from server.handlers.base import PageHandler
from server.permissions import Requirement
from server.realtime.hub import DEFAULT_ROOM
from server.realtime.limits import ROOM_PATTERN
from server.services import Services


class ChatPageHandler(PageHandler):
    """``GET /chat`` and ``GET /robbit`` (``?room=NAME``, default ``lobby``): the chat room of a
    logged-in user; anonymous visitors are sent to the login form."""

    title = "聊天室"

    def initialize(self, services: Services, need: Requirement, title: str = "聊天室") -> None:
        """Receive the services, the route's requirement and the page title (route kwargs)."""
        super().initialize(services, need)
        self.title = title

    async def get(self) -> None:
        """Render ``chat/room.html``; the page's script opens ``/message``."""
        login = self.current_login()
        room = self.get_query_argument("room", DEFAULT_ROOM) or DEFAULT_ROOM
        if not ROOM_PATTERN.match(room):
            room = DEFAULT_ROOM
        await self.render_page(
            "chat/room.html", title=self.title, room=room, me=login.principal.name
        )


class TickerPageHandler(PageHandler):
    """``GET /ticker/page``: shows what the ``/ticker`` WebSocket sends (open to everyone)."""

    async def get(self) -> None:
        """Render ``chat/ticker.html``."""
        await self.render_page("chat/ticker.html")

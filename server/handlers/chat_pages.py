"""The realtime pages: the chat room (``/chat``) and the ticker. (``/robbit``, the seed's
客服在线, is a private support conversation: ``support.py``.)"""

from __future__ import annotations

from schemas.text import Text
from server.handlers.base import PageHandler
from server.permissions import Requirement
from server.realtime.hub import DEFAULT_ROOM
from server.realtime.limits import ROOM_PATTERN
from server.realtime.rooms import is_private
from server.services import Services

CHAT_ROOM = Text("Chat room")
LIVE_SUPPORT = Text("Live support")
"""The seed's ``/robbit`` page title (客服在线)."""


class ChatPageHandler(PageHandler):
    """``GET /chat`` (``?room=NAME``, default ``lobby``): the chat room of a logged-in user;
    anonymous visitors are sent to the login form. A private room's name (``support-...``)
    shows the lobby: conversations have their own page (``/support/{id}``)."""

    title = CHAT_ROOM

    def initialize(self, services: Services, need: Requirement, title: Text = CHAT_ROOM) -> None:
        """Receive the services, the route's requirement and the page title (route kwargs),
        shown in the reader's language."""
        super().initialize(services, need)
        self.title = title

    async def get(self) -> None:
        """Render ``chat/room.html``; the page's script opens ``/message``."""
        login = self.current_login()
        room = self.get_query_argument("room", DEFAULT_ROOM) or DEFAULT_ROOM
        if not ROOM_PATTERN.match(room) or is_private(room):
            room = DEFAULT_ROOM
        await self.render_page(
            "chat/room.html", title=self.text(self.title), room=room, me=login.principal.name
        )


class TickerPageHandler(PageHandler):
    """``GET /ticker/page``: shows what the ``/ticker`` WebSocket sends (open to everyone)."""

    async def get(self) -> None:
        """Render ``chat/ticker.html``."""
        await self.render_page("chat/ticker.html")

"""The realtime routes: chat pages, the chat WebSocket and the ticker."""

from __future__ import annotations

from typing import Any

from tornado.routing import Rule

from server.handlers.chat_pages import CHAT_ROOM, ChatPageHandler, TickerPageHandler
from server.handlers.support import support_routes
from server.permissions import CHAT_USE, PUBLIC, route
from server.realtime.ticker import TickerSocketHandler
from server.realtime.websocket import ChatSocketHandler


def realtime_routes(deps: dict[str, Any]) -> list[Rule]:
    """The routes of the realtime package.

    - ``/chat``: the chat page, ``?room=NAME`` (``chat.use``), the seed's 聊天室 (``lobby``);
    - ``/robbit`` (the seed's 客服在线) and ``/support...``: private support conversations
      (``server/handlers/support.py``);
    - ``/message?room=NAME&last_id=N``: the chat WebSocket (session cookie, same origin);
    - ``/ticker``: the seed's ticker WebSocket; ``/ticker/page``: the page that shows it.
    """
    return [
        route(r"/chat", ChatPageHandler, deps, name="chat", need=CHAT_USE, title=CHAT_ROOM),
        *support_routes(deps),
        route(r"/message", ChatSocketHandler, deps, name="message", need=CHAT_USE),
        route(r"/ticker", TickerSocketHandler, deps, name="ticker", need=PUBLIC),
        route(r"/ticker/page", TickerPageHandler, deps, name="ticker-page", need=PUBLIC),
    ]

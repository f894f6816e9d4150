"""The realtime routes: chat pages, the chat WebSocket and the ticker."""

from __future__ import annotations

from typing import Any

from tornado.routing import Rule

from server.handlers.chat_pages import ChatPageHandler, TickerPageHandler
from server.permissions import CHAT_USE, PUBLIC, route
from server.realtime.ticker import TickerSocketHandler
from server.realtime.websocket import ChatSocketHandler


def realtime_routes(deps: dict[str, Any]) -> list[Rule]:
    """The routes of the realtime package.

    - ``/chat`` and ``/robbit`` (the seed's name): the chat page, ``?room=NAME`` (``chat.use``);
    - ``/message?room=NAME&last_id=N``: the chat WebSocket (session cookie, same origin);
    - ``/ticker``: the seed's ticker WebSocket; ``/ticker/page``: the page that shows it.
    """
    return [
        route(r"/chat", ChatPageHandler, deps, name="chat", need=CHAT_USE, title="聊天室"),
        route(r"/robbit", ChatPageHandler, deps, name="robbit", need=CHAT_USE, title="客服在线"),
        route(r"/message", ChatSocketHandler, deps, name="message", need=CHAT_USE),
        route(r"/ticker", TickerSocketHandler, deps, name="ticker", need=PUBLIC),
        route(r"/ticker/page", TickerPageHandler, deps, name="ticker-page", need=PUBLIC),
    ]

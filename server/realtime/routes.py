"""The realtime routes: chat pages, the chat WebSocket and the ticker."""

from __future__ import annotations

from typing import Any

from tornado.routing import Rule
from tornado.web import url

from server.handlers.chat_pages import ChatPageHandler, TickerPageHandler
from server.realtime.ticker import TickerSocketHandler
from server.realtime.websocket import ChatSocketHandler


def realtime_routes(deps: dict[str, Any]) -> list[Rule]:
    """The routes of the realtime package.

    - ``/chat`` and ``/robbit`` (the seed's name): the chat page, ``?room=NAME``;
    - ``/message?room=NAME&last_id=N``: the chat WebSocket (session cookie, same origin);
    - ``/ticker``: the seed's ticker WebSocket; ``/ticker/page``: the page that shows it.
    """
    return [
        url(r"/chat", ChatPageHandler, {**deps, "title": "聊天室"}, name="chat"),
        url(r"/robbit", ChatPageHandler, {**deps, "title": "客服在线"}, name="robbit"),
        url(r"/message", ChatSocketHandler, deps, name="message"),
        url(r"/ticker", TickerSocketHandler, deps, name="ticker"),
        url(r"/ticker/page", TickerPageHandler, deps, name="ticker-page"),
    ]

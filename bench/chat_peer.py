"""The fan-out peer: the seed's chat room (guide §9.2) in bare Tornado.

Usage: ``python -m bench.chat_peer PORT``.

A class-level list of handlers and ``write_message`` to each of them on every message, exactly as
the seed writes it, minus the name-only cookie (no auth), persistence, limits and JSON: plain text
in, plain text out. ``GET /`` answers ``ok`` so the harness can wait for it to be ready.
"""

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from typing import ClassVar

from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketClosedError, WebSocketHandler

GUEST = "guest"


class ReadyHandler(RequestHandler):
    """``GET /``: the readiness probe."""

    def get(self) -> None:
        """Answer ``ok``."""
        self.write("ok")


class MessageHandler(WebSocketHandler):
    """``/message``: the seed's broadcast room."""

    online_clients: ClassVar[list["MessageHandler"]] = []

    def send_all(self, msg: str) -> None:
        """Write ``msg`` to every connected client, as the seed does."""
        for client in self.online_clients:
            # The seed would crash on a closed socket; the peer only has to keep broadcasting.
            with contextlib.suppress(WebSocketClosedError):
                client.write_message(msg)

    def open(self) -> None:
        """Join the room."""
        MessageHandler.online_clients.append(self)

    def on_message(self, message: str | bytes) -> None:
        """Broadcast ``<name> 说: <message>`` to everyone."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        self.send_all(f"{GUEST} 说: {text}")

    def on_connection_close(self) -> None:
        """Leave the room."""
        if self in MessageHandler.online_clients:
            MessageHandler.online_clients.remove(self)


def make_app() -> Application:
    """The peer's two routes."""
    return Application([(r"/", ReadyHandler), (r"/message", MessageHandler)])


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` until the process is stopped."""
    make_app().listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve on the port given on the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.chat_peer")
    parser.add_argument("port", type=int)
    asyncio.run(serve(parser.parse_args(argv).port))


if __name__ == "__main__":
    main()

"""Test helper: a real SMTP server (aiosmtpd) that keeps what it receives, and link extraction."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from server.app import make_app
from server.services import Services, open_services
from tests.conftest import Client, make_settings

LINK = re.compile(r"https?://\S+/(?:reset|verify)/[A-Za-z0-9_-]+")
WAIT_SECONDS = 10.0


def free_port() -> int:
    """A TCP port nobody listens on right now (for a server that binds by itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mailbox:
    """Every message the SMTP server accepted, in order; ``start``/``stop`` run the server."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        """The ``MSERVICES_SMTP_URL`` of this server."""
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start listening (in aiosmtpd's own thread)."""
        self._controller.start()

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: keep the message."""
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def count(self) -> int:
        """How many messages have arrived."""
        with self._lock:
            return len(self.messages)

    async def wait_for(self, count: int) -> EmailMessage:
        """The ``count``-th message (1-based), waiting (bounded) for it: mail is sent in the
        background after the response."""
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while self.count() < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"message {count} never arrived ({self.count()} did)")
            await asyncio.sleep(0.02)
        with self._lock:
            return self.messages[count - 1]


def link_in(message: EmailMessage) -> str:
    """The one verification or reset link in ``message``'s text."""
    body = message.get_body(("plain",))
    assert body is not None
    links = LINK.findall(body.get_content())
    assert len(links) == 1, links
    return str(links[0])


@dataclass
class Site:
    """The app served with SMTP pointed at a mailbox and mailed links at its own address."""

    client: Client
    services: Services
    mailbox: Mailbox
    base_url: str


@asynccontextmanager
async def serve_with_mail(
    tmp_path: Path, database_url: str, mailbox: Mailbox, **overrides: Any
) -> AsyncIterator[Site]:
    """Serve the app on an unused port whose address is ``MSERVICES_PUBLIC_URL`` and whose mail
    goes to ``mailbox``; reset requests: 5 per IP, 2 per address."""
    sock, port = bind_unused_port()
    base_url = f"http://127.0.0.1:{port}"
    values: dict[str, Any] = {
        "public_url": base_url,
        "smtp_url": mailbox.url,
        "mail_from": "mservices <noreply@example.com>",
        "reset_per_ip": 5,
        "reset_per_email": 2,
        **overrides,
    }
    settings = make_settings(tmp_path, database_url, **values)
    services = await open_services(settings)
    server = HTTPServer(make_app(settings, services))
    server.add_sockets([sock])
    client = Client(base_url)
    try:
        yield Site(client, services, mailbox, base_url)
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
        await services.close()

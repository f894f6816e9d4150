"""Proxy awareness: forwarding headers are believed only from trusted peers, through the
serving HTTP server, so a client talking to a process directly cannot choose its address."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httputil import HTTPHeaders
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from server.proxies import Networks, forwarded_client
from server.runtime import DrainingHTTPServer

TRUSTED = Networks(["127.0.0.1", "10.0.0.0/8"])


def headers(**values: str) -> HTTPHeaders:
    """Request headers; underscores in names become dashes."""
    return HTTPHeaders({name.replace("_", "-"): value for name, value in values.items()})


def test_networks_hold_addresses_and_cidrs_and_refuse_garbage() -> None:
    assert "127.0.0.1" in TRUSTED
    assert "10.1.2.3" in TRUSTED
    assert "::ffff:10.1.2.3" in TRUSTED  # IPv4-mapped IPv6
    assert "127.0.0.2" not in TRUSTED
    assert "not-an-ip" not in TRUSTED
    assert None not in TRUSTED


def test_an_untrusted_peer_keeps_its_own_address_and_scheme() -> None:
    sent = headers(
        X_Forwarded_For="203.0.113.7", X_Real_IP="203.0.113.8", X_Forwarded_Proto="https"
    )
    assert forwarded_client("198.51.100.1", "http", sent, TRUSTED) == ("198.51.100.1", "http")


def test_a_trusted_peer_gives_the_right_most_untrusted_forwarded_address() -> None:
    sent = headers(X_Forwarded_For="1.1.1.1, 203.0.113.7, 10.0.0.5", X_Forwarded_Proto="https")
    assert forwarded_client("127.0.0.1", "http", sent, TRUSTED) == ("203.0.113.7", "https")


def test_a_trusted_peer_without_x_forwarded_for_gives_x_real_ip() -> None:
    sent = headers(X_Real_IP="203.0.113.8")
    assert forwarded_client("127.0.0.1", "http", sent, TRUSTED) == ("203.0.113.8", "http")


@pytest.mark.parametrize(
    "sent",
    [
        {"X-Forwarded-For": "not-an-ip"},
        {"X-Real-IP": "999.1.1.1"},
        {"X-Forwarded-Proto": "gopher"},
    ],
    ids=["bad-forwarded-for", "bad-real-ip", "bad-proto"],
)
def test_malformed_forwarding_headers_are_ignored(sent: dict[str, str]) -> None:
    assert forwarded_client("127.0.0.1", "http", HTTPHeaders(sent), TRUSTED) == (
        "127.0.0.1",
        "http",
    )


class WhoAmI(RequestHandler):
    """Answers with the client address and scheme the server settled on."""

    def get(self) -> None:
        """Say who is asking."""
        self.write({"ip": self.request.remote_ip, "protocol": self.request.protocol})


@pytest.fixture
async def whoami() -> AsyncIterator[str]:
    """A DrainingHTTPServer trusting only 127.0.0.1, serving WhoAmI; its base URL."""
    sock, port = bind_unused_port()
    server = DrainingHTTPServer(
        Application([("/", WhoAmI)]), trusted_proxies=Networks(["127.0.0.1"])
    )
    server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.stop()
        await server.close_all_connections()


async def ask(url: str, source: str) -> dict[str, str]:
    """GET ``url`` from the local address ``source`` with spoofed forwarding headers."""
    http = AsyncHTTPClient(force_instance=True)
    try:
        response = await http.fetch(
            HTTPRequest(
                url,
                network_interface=source,
                headers={
                    "X-Forwarded-For": "203.0.113.7",
                    "X-Real-IP": "203.0.113.8",
                    "X-Forwarded-Proto": "https",
                },
                request_timeout=10,
            )
        )
    finally:
        http.close()
    result: dict[str, str] = json.loads(response.body)
    return result


async def test_a_direct_client_that_is_not_a_trusted_proxy_cannot_spoof_its_address(
    whoami: str,
) -> None:
    # 127.0.0.2 is loopback too, but not in the trusted list: a client, not a proxy.
    assert await ask(whoami, "127.0.0.2") == {"ip": "127.0.0.2", "protocol": "http"}


async def test_a_trusted_proxy_peer_passes_the_client_address_and_scheme_on(whoami: str) -> None:
    assert await ask(whoami, "127.0.0.1") == {"ip": "203.0.113.7", "protocol": "https"}

"""Which URLs downloads may fetch, and the resolver that makes the client connect where we checked.

The policy: http and https only, no credentials in the URL, and every address the host resolves to
must be public (not loopback, private, link-local, site-local, multicast, reserved or unspecified;
a 6to4 address is judged by the IPv4 address it embeds too) unless it is in ``DOWNLOAD_ALLOW``.
Resolution goes through the event loop's resolver (``getaddrinfo`` in an executor), never blocking
the loop. Against DNS rebinding, the client of each request gets a
``PinnedResolver`` that answers the checked address for the checked host and nothing else, so the
address that was checked is the one connected to, while the Host header, SNI and certificate check
keep the hostname.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from tornado.netutil import DefaultLoopResolver, Resolver

from schemas.text import Text
from server.downloads.errors import ForbiddenAddress, InvalidUrl
from server.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the policy, and the address it will be fetched from."""

    url: str
    host: str
    port: int
    family: socket.AddressFamily
    address: str


def split_url(url: str) -> tuple[SplitResult, str, int]:
    """The parts, host and port of an http(s) URL; ``InvalidUrl`` for anything else."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(Text("the URL is longer than {limit} characters", limit=MAX_URL_LENGTH))
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise InvalidUrl(Text("the URL contains spaces or control characters"))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidUrl(Text("the URL is malformed: {error}", error=str(error))) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidUrl(
            Text("only http:// and https:// URLs can be downloaded"), code="invalid_scheme"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl(Text("credentials in the URL are not accepted"))
    host = parts.hostname
    if not host:
        raise InvalidUrl(Text("the URL has no host"))
    return parts, host, port or DEFAULT_PORTS[scheme]


def unresolvable(host: str) -> InvalidUrl:
    """The refusal of a host name that resolves to nothing."""
    return InvalidUrl(
        Text("the host {host} does not resolve", host=repr(host)), code="unresolvable_host"
    )


def literal(host: str, port: int) -> list[tuple[int, Any]]:
    """An IP-literal host as a resolver would answer it (no executor round trip); [] for names."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return [(family, (str(address), port))]


class AddressPolicy:
    """Public addresses are allowed; any other only when inside one of the ``allow`` networks."""

    def __init__(self, allow: Sequence[IPNetwork] = ()) -> None:
        """Allow, besides public addresses, those inside ``allow`` (``DOWNLOAD_ALLOW``)."""
        self.allow = tuple(allow)

    def permits(self, address: IPAddress) -> bool:
        """True when a download may connect to ``address``."""
        if any(address in network for network in self.allow):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return self.permits(address.ipv4_mapped)
            # 6to4 (2002::/16) is routed to the IPv4 address it embeds: that one must be allowed.
            if address.sixtofour is not None and not self.permits(address.sixtofour):
                return False
            if address.is_site_local:  # fec0::/10, deprecated but still private in practice
                return False
        refused = (
            address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
        )
        return not refused and address.is_global


class UrlGuard:
    """Checks a URL against the scheme rules and its resolved addresses against the policy."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver | None = None) -> None:
        """Check with ``policy``; resolve with ``resolver`` (default: the loop's getaddrinfo)."""
        self.policy = policy
        self.resolver = resolver or DefaultLoopResolver()

    async def check(self, url: str) -> Target:
        """The target of ``url``, or ``InvalidUrl`` / ``ForbiddenAddress``.

        Every address the host resolves to must be allowed, so a name that mixes public and
        private records is refused whichever the client would have picked.
        """
        _, host, port = split_url(url)
        try:
            resolved = literal(host, port) or await self.resolver.resolve(host, port)
        except (OSError, UnicodeError):  # UnicodeError: an empty or over-long label (IDNA)
            raise unresolvable(host) from None
        if not resolved:
            raise unresolvable(host)
        for _, sockaddr in resolved:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not self.policy.permits(address):
                raise ForbiddenAddress(
                    Text(
                        "{host} resolves to {address}, an address downloads may not reach",
                        host=host,
                        address=str(address),
                    )
                )
        family, sockaddr = resolved[0]
        return Target(url, host, port, socket.AddressFamily(family), str(sockaddr[0]))

    def close(self) -> None:
        """Release the resolver."""
        self.resolver.close()


class PinnedResolver(Resolver):
    """Resolves the checked host to the checked address only; any other name is an error."""

    def initialize(self, target: Target) -> None:
        """Pin ``target.host`` to ``target.address``."""
        self.target = target

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        """The pinned address for the pinned host."""
        if host.lower().rstrip(".") != self.target.host.lower().rstrip("."):
            raise OSError(f"{host} was not checked by the download guard")
        return [(self.target.family, (self.target.address, port))]

"""Proxy awareness: the real client address and scheme behind trusted reverse proxies.

A request's forwarding headers (``X-Forwarded-For``, ``X-Real-IP``, ``X-Forwarded-Proto``) are
believed only when the TCP peer itself is a trusted proxy (``MSERVICES_TRUSTED_PROXIES``), so a
client talking to the process directly can never choose its own address. ``X-Forwarded-For`` is
read from the right, skipping trusted proxies: the first address that is not one is the client
(nginx appends its peer, so whatever a client sent itself stays on the left, unbelieved).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tornado.httputil import HTTPHeaders

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Networks:
    """A set of IP networks (single addresses are /32 or /128) with a membership test."""

    def __init__(self, networks: Iterable[IPNetwork | str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in networks
        )

    def __contains__(self, address: object) -> bool:
        """True when ``address`` (a string) is a valid IP inside one of the networks."""
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)


def forwarded_client(
    peer: str, protocol: str, headers: HTTPHeaders, trusted: Networks
) -> tuple[str, str]:
    """The client address and scheme of a request that arrived from ``peer`` over ``protocol``.

    Unchanged unless ``peer`` is trusted; then the right-most untrusted ``X-Forwarded-For``
    entry (or ``X-Real-IP`` without that header) and the last ``X-Forwarded-Proto`` value.
    Malformed values are ignored, never trusted.
    """
    if peer not in trusted:
        return peer, protocol
    client = peer
    chain = [part.strip() for part in headers.get("X-Forwarded-For", "").split(",")]
    hops = [part for part in chain if part]
    if hops:
        for hop in reversed(hops):
            if not _is_ip(hop):
                break  # garbage from further left than any proxy we trust wrote
            client = hop
            if hop not in trusted:
                break
    else:
        real_ip = headers.get("X-Real-IP", "").strip()
        if _is_ip(real_ip):
            client = real_ip
    scheme = headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    return client, scheme if scheme in ("http", "https") else protocol


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True

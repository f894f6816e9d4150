"""The guard: schemes, address classes, DOWNLOAD_ALLOW, real resolution, and pinning."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from tornado.httpclient import AsyncHTTPClient

from schemas.text import Text
from server.downloads.errors import ForbiddenAddress, InvalidUrl
from server.downloads.guard import AddressPolicy, PinnedResolver, Target, UrlGuard
from tests.server.downloads.conftest import Upstream, chinese

LOOPBACK = [ipaddress.ip_network("127.0.0.1")]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "fc00::1",
        "224.0.0.1",
        "239.255.255.250",
        "ff02::1",
        "0.0.0.0",
        "::",
        "240.0.0.1",
        "255.255.255.255",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::",  # 6to4 of 192.168.1.1
        "fec0::1",  # deprecated site-local
        "feff::1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().permits(ipaddress.ip_address(address))


def test_allowed_networks_open_exactly_those_addresses() -> None:
    policy = AddressPolicy([ipaddress.ip_network("10.0.0.0/8"), *LOOPBACK])
    assert policy.permits(ipaddress.ip_address("10.200.0.1"))
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("127.0.0.2"))
    assert not policy.permits(ipaddress.ip_address("192.168.0.1"))


def test_a_6to4_address_is_allowed_when_the_address_it_embeds_is() -> None:
    policy = AddressPolicy(LOOPBACK)
    assert policy.permits(ipaddress.ip_address("2002:7f00:1::1"))
    assert not policy.permits(ipaddress.ip_address("2002:7f00:2::1"))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/file", "invalid_scheme"),
        ("file:///etc/passwd", "invalid_scheme"),
        ("javascript:alert(1)", "invalid_scheme"),
        ("example.com/file", "invalid_scheme"),
        ("http://", "invalid_url"),
        ("http://user:pw@example.com/", "invalid_url"),
        ("http://example.com:99999/", "invalid_url"),
        ("http://exa mple.com/", "invalid_url"),
        ("http://example.com/\x00", "invalid_url"),
        ("http://" + "a" * 3000 + ".com/", "invalid_url"),
        ("http://no-such-host.invalid/", "unresolvable_host"),
        ("http://a..b/x", "unresolvable_host"),
        ("http://.example.com/", "unresolvable_host"),
        ("http://" + "a" * 64 + ".example.com/", "unresolvable_host"),
    ],
)
async def test_bad_urls_are_refused_with_a_reason(url: str, code: str) -> None:
    guard = UrlGuard(AddressPolicy())
    with pytest.raises(InvalidUrl) as refused:
        await guard.check(url)
    assert refused.value.code == code
    assert refused.value.status == 422


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://2130706433/",
    ],
)
async def test_urls_reaching_private_addresses_are_forbidden(url: str) -> None:
    guard = UrlGuard(AddressPolicy())
    with pytest.raises(ForbiddenAddress) as refused:
        await guard.check(url)
    assert refused.value.status == 403


async def test_a_refusal_says_why_in_the_readers_language() -> None:
    guard = UrlGuard(AddressPolicy())
    with pytest.raises(ForbiddenAddress) as refused:
        await guard.check("http://10.0.0.1/")
    reason = refused.value.message
    assert isinstance(reason, Text)
    assert str(reason) == "10.0.0.1 resolves to 10.0.0.1, an address downloads may not reach"
    assert chinese(reason) == "10.0.0.1 解析为 10.0.0.1，下载不能访问这个地址"
    with pytest.raises(InvalidUrl) as scheme:
        await guard.check("ftp://example.com/")
    assert chinese(scheme.value.message) == "只能下载 http:// 或 https:// 网址"


async def test_an_allowed_address_resolves_to_a_target() -> None:
    target = await UrlGuard(AddressPolicy(LOOPBACK)).check("http://LOCALHOST:8123/x")
    assert (target.host, target.port, target.address) == ("localhost", 8123, "127.0.0.1")
    assert target.family == socket.AF_INET


async def test_the_pinned_resolver_connects_to_the_checked_address_and_keeps_the_host(
    upstream: Upstream,
) -> None:
    port = int(upstream.base_url.rsplit(":", 1)[1])
    name = "rebinding.invalid"  # resolves nowhere: only the pin can make this request work
    target = Target(f"http://{name}:{port}/bytes/10", name, port, socket.AF_INET, "127.0.0.1")
    resolver = PinnedResolver(target=target)
    client = AsyncHTTPClient(force_instance=True, resolver=resolver)
    try:
        response = await client.fetch(target.url)
    finally:
        client.close()
    assert len(response.body) == 10
    assert upstream.hosts == [f"{name}:{port}"]
    with pytest.raises(OSError):
        await resolver.resolve("other.invalid", port)

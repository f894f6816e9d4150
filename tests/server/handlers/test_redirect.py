"""/redirect?to=: local paths are followed, everything that could leave the site is a 400."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from server.local_paths import MAX_TARGET
from tests.conftest import Client


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/", "/"),
        ("/orders", "/orders"),
        ("/order/1/2?x=1&y=2#top", "/order/1/2?x=1&y=2#top"),
        ("/%2F%2Fencoded", "/%2F%2Fencoded"),
        ("/中文页", "/%E4%B8%AD%E6%96%87%E9%A1%B5"),
    ],
)
async def test_a_local_path_is_followed(client: Client, target: str, location: str) -> None:
    response = await client.get(f"/redirect?to={quote(target, safe='')}")

    assert response.status == 302
    assert response.headers["Location"] == location


@pytest.mark.parametrize(
    "target",
    [
        "",
        "orders",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\r\nSet-Cookie: x=1",
        "/a\x00b",
        "/a\x7fb",
        "/a b",
        " /orders",
        "/" + "a" * MAX_TARGET,
    ],
)
async def test_anything_that_could_leave_the_site_is_a_400_page(
    client: Client, target: str
) -> None:
    response = await client.get(f"/redirect?to={quote(target, safe='')}")

    assert response.status == 400
    assert "Location" not in response.headers
    assert "必须是以单个 / 开头的本站路径" in response.text
    assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("query", ["", "?to=/a&to=/b"])
async def test_a_missing_or_repeated_target_is_400(client: Client, query: str) -> None:
    response = await client.get(f"/redirect{query}")

    assert response.status == 400
    assert "请给出恰好一个 `to`" in response.text


async def test_the_refusal_is_in_english_for_a_browser_that_asks_for_it(client: Client) -> None:
    response = await client.get("/redirect?to=//evil.example", headers={"Accept-Language": "en"})

    assert response.status == 400
    assert "must be a local path starting with a single /" in response.text
    assert "本站路径" not in response.text


async def test_a_target_that_is_not_utf8_is_400(client: Client) -> None:
    response = await client.get("/redirect?to=/orders%FF")

    assert response.status == 400
    assert "Location" not in response.headers

"""``/docs``: resolved schema tables, query parameters, the realtime protocols, "try it out"."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

from tornado.escape import xhtml_escape

from server import support
from server.app import STATIC_DIR
from server.handlers.docs import MAX_SCHEMA_DEPTH, SchemaTables
from server.realtime import hub, tcp, websocket
from server.realtime.protocol import realtime_protocols
from tests.conftest import Client

CHINESE = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
"""Han characters and CJK punctuation (full-width colons and brackets included)."""


async def docs_html(client: Client, language: str | None = None) -> str:
    headers = {"Accept-Language": language} if language else None
    response = await client.get("/docs", headers=headers)
    assert response.status == 200
    return response.text


def page_content(html: str) -> str:
    """The page's own part (``<main>``), without the examples (``<pre>``: chat messages)."""
    main = html.split("<main", 1)[1].split("</main>", 1)[0]
    return re.sub(r"<pre>.*?</pre>", "", main, flags=re.DOTALL)


async def openapi(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    body: dict[str, Any] = response.json()
    return body


def source_of(module: ModuleType) -> str:
    """The source text of ``module``."""
    return Path(module.__file__ or "").read_text(encoding="utf-8")


def table_row(html: str, *cells: str) -> bool:
    """True when some table row holds these cells in this order."""
    pattern = "</td><td>".join(re.escape(cell) for cell in cells)
    return re.search(pattern, html) is not None


async def test_the_docs_page_shows_no_raw_reference(client: Client) -> None:
    html = await docs_html(client)
    assert "$ref" not in html
    assert "#/components/schemas" not in html
    assert "&quot;properties&quot;" not in html  # no schema dumped as JSON


async def test_request_bodies_are_tables_of_their_resolved_properties(client: Client) -> None:
    html = await docs_html(client)
    # RegisterRequest (POST /user): each field with its type, whether required and constraints.
    assert "<h4>请求体 <code>RegisterRequest</code></h4>" in html
    assert table_row(html, "<code>pwd</code>", "<code>string</code>", "是")
    assert '<span class="constraint">最短 8</span>' in html
    assert '<span class="constraint">最长 32</span>' in html
    assert "不接受表中以外的字段（否则 422）。" in html


async def test_the_page_speaks_chinese_by_default_and_says_descriptions_are_english(
    client: Client,
) -> None:
    html = await docs_html(client)
    assert '<html lang="zh-CN">' in html
    assert "接口说明为英文。" in html
    assert "API descriptions are in English." not in html
    assert "<h4>试一试</h4>" in html and ">发送请求</button>" in html
    assert 'placeholder="粘贴令牌，或在下面运行 POST /user/login 自动填入"' in html
    assert '<a href="/openapi.json">/openapi.json</a>（OpenAPI 3.1.0）。' in html


async def test_the_page_in_english_has_no_chinese_of_its_own(client: Client) -> None:
    html = await docs_html(client, "en-GB,en;q=0.9")
    assert '<html lang="en-US">' in html
    assert "API descriptions are in English." in html
    assert "<h4>Request body <code>RegisterRequest</code></h4>" in html
    assert table_row(html, "<code>pwd</code>", "<code>string</code>", "Yes")
    assert '<span class="constraint">min length 8</span>' in html
    assert '<span class="constraint">≤ 200</span>' in html
    assert "Fields not in this table are refused (422)." in html
    assert "MenuTreeNode (as above)" in html
    assert "<h4>Try it out</h4>" in html and ">Send request</button>" in html
    assert '<code>200</code> <span lang="en">OK</span>: <code>' in html
    assert CHINESE.findall(page_content(html)) == []


async def test_nested_models_are_opened_under_their_property(client: Client) -> None:
    html = await docs_html(client)
    assert "<code>menus[].title</code>" in html
    assert "<code>items[].role_ids</code>" in html
    assert "MenuTreeNode（结构同上）" in html  # the tree's children: named, not opened forever


async def test_query_parameters_are_listed_with_their_constraints(client: Client) -> None:
    html = await docs_html(client)
    users = html.split("<code>/api/users</code>", 1)[1].split("</details>", 1)[0]
    for name in ("offset", "limit", "q"):
        assert f'data-in="query" data-name="{name}"' in users
    assert '<span class="constraint">最长 64</span>' in users
    assert '<span class="constraint">≤ 200</span>' in users
    menu = html.split(">DELETE</code> <code>/api/menus/{menu_id}</code>", 1)[1]
    menu = menu.split("</details>", 1)[0]
    assert "<code>cascade</code>" in menu and "查询" in menu
    assert 'data-in="path" data-name="menu_id"' in menu


async def test_every_operation_has_a_try_it_form_and_the_token_field(client: Client) -> None:
    html = await docs_html(client)
    document = await openapi(client)
    assert 'id="docs-token"' in html
    assert "/s/js/docs.js" in html
    for path, methods in document["paths"].items():
        for method in methods:
            form = f'data-method="{method.upper()}" data-path="{xhtml_escape(path)}"'
            assert form in html, f"{method} {path}"


def test_the_try_it_script_sends_the_token_without_cookies_and_shows_text() -> None:
    script = (Path(STATIC_DIR) / "js" / "docs.js").read_text(encoding="utf-8")
    assert 'credentials: "omit"' in script
    assert '"Bearer " + token' in script
    assert "innerHTML" not in script
    assert "textContent" in script


async def test_the_realtime_section_describes_every_frame_the_server_sends(
    client: Client,
) -> None:
    sources = source_of(hub) + source_of(websocket) + source_of(support)
    sent = set(re.findall(r'encode\(\s*"(\w+)"', sources))
    protocol = realtime_protocols()["websocket"]
    assert {frame["type"] for frame in protocol["server_frames"]} == sent
    html = await docs_html(client)
    assert 'id="realtime-websocket"' in html
    for kind in sent:
        assert f'<code class="method">{kind}</code>' in html
    for close in protocol["close_codes"]:
        assert f"<td><code>{close['code']}</code></td>" in html
    assert "<code>4001</code>" in html


async def test_the_realtime_section_lists_every_tcp_command(client: Client) -> None:
    source = source_of(tcp)
    accepted = set(re.findall(r'case "(/\w+)"', source))
    documented = {
        item["command"].split()[0]
        for item in realtime_protocols()["tcp"]["commands"]
        if item["command"].startswith("/")
    }
    assert documented == accepted
    html = await docs_html(client)
    assert 'id="realtime-tcp"' in html
    assert xhtml_escape(str(tcp.GREETING)) in html
    for command in accepted:
        assert f"<code>{command}" in html


def test_schema_tables_stop_at_the_depth_guard() -> None:
    # A chain of models deeper than the guard, and a model that holds itself.
    components: dict[str, Any] = {
        f"M{level}": {
            "type": "object",
            "properties": {"next": {"$ref": f"#/components/schemas/M{level + 1}"}},
        }
        for level in range(MAX_SCHEMA_DEPTH * 3)
    }
    components["Self"] = {
        "type": "object",
        "properties": {"me": {"$ref": "#/components/schemas/Self"}},
    }
    tables = SchemaTables({"components": {"schemas": components}})
    rows = tables.rows({"$ref": "#/components/schemas/M0"})
    assert len(rows) == MAX_SCHEMA_DEPTH
    assert max(row.depth for row in rows) == MAX_SCHEMA_DEPTH - 1
    assert [row.name for row in tables.rows({"$ref": "#/components/schemas/Self"})] == ["me"]

"""/cookie (seed §1.3): lists, sets and clears cookies; escaped, XSRF-protected, and the cookies
mservices manages itself cannot be touched."""

from __future__ import annotations

import re
from http.cookies import Morsel

import pytest

from server.handlers.base import LANGUAGE_COOKIE, SESSION_COOKIE
from server.handlers.cookies import ATTRIBUTE_RULE, cookie_problem
from tests.conftest import Client
from tests.server.handlers.test_admin_pages import Browser, flash_of
from tests.server.handlers.test_user import PASSWORD, register

HOSTILE_VALUE = "<script>alert(1)</script>"


def english(browser: Browser) -> Browser:
    """``browser`` with English chosen through the language cookie (the header switch's)."""
    browser.cookies[LANGUAGE_COOKIE] = "en_US"
    return browser


def cookie_rows(page: str) -> dict[str, str]:
    """The name/value table of the page, still escaped."""
    rows = re.findall(r"<tr>\s*<td><code>(.*?)</code></td>\s*<td><code>(.*?)</code></td>", page)
    return dict(rows)


async def test_the_page_lists_the_cookies_sent_with_values_escaped(client: Client) -> None:
    response = await client.get("/cookie", headers={"Cookie": f'theme=dark; odd="{HOSTILE_VALUE}"'})

    assert response.status == 200
    rows = cookie_rows(response.text)
    assert rows["theme"] == "dark"
    assert rows["odd"] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert HOSTILE_VALUE not in response.text


async def test_a_cookie_is_set_then_listed_then_cleared(client: Client) -> None:
    browser = Browser(client)
    flash = await browser.act("/cookie", {"action": "set", "name": "theme", "value": "dark"})
    assert flash.text == "已设置 Cookie theme"
    assert browser.cookies["theme"] == "dark"
    assert cookie_rows((await browser.get("/cookie")).text)["theme"] == "dark"

    flash = await browser.act("/cookie", {"action": "clear", "name": "theme"})

    assert flash.text == "已清除 Cookie theme"
    assert "theme" not in browser.cookies
    assert "theme" not in cookie_rows((await browser.get("/cookie")).text)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"action": "set", "name": "", "value": "x"}, "cookie name"),
        ({"action": "set", "name": "a b", "value": "x"}, "cookie name"),
        ({"action": "set", "name": "<b>", "value": "x"}, "cookie name"),
        ({"action": "set", "name": "ok", "value": "has space"}, "cookie value"),
        ({"action": "set", "name": "ok", "value": "a;b=c"}, "cookie value"),
        ({"action": "set", "name": "ok", "value": "中文"}, "cookie value"),
        ({"action": "set", "name": "ok", "value": "x" * 257}, "cookie value"),
        ({"action": "clear", "name": "a=b"}, "cookie name"),
        ({"action": "eat", "name": "ok"}, "choose set or clear"),
    ],
)
async def test_an_invalid_cookie_is_refused_with_400_and_the_reason(
    client: Client, fields: dict[str, str], reason: str
) -> None:
    browser = english(Browser(client))

    response = await browser.post("/cookie", fields)

    assert response.status == 400
    assert reason in response.text
    assert "ok" not in browser.cookies


@pytest.mark.parametrize(
    "name",
    [
        "path",
        "Expires",
        "secure",
        "max-age",
        "Domain",
        "samesite",
        "HttpOnly",
        "comment",
        "version",
    ],
)
@pytest.mark.parametrize("action", ["set", "clear"])
async def test_cookie_attribute_names_are_refused_with_400_and_the_reason(
    client: Client, action: str, name: str
) -> None:
    browser = english(Browser(client))

    response = await browser.post("/cookie", {"action": action, "name": name, "value": "x"})

    assert response.status == 400
    assert "attribute" in response.text
    assert name not in browser.cookies


@pytest.mark.parametrize("name", sorted(Morsel._reserved))  # type: ignore[attr-defined]
def test_every_name_pythons_cookie_module_reserves_is_refused(name: str) -> None:
    # Morsel._reserved is what makes set_cookie raise CookieError; a Python that adds a name
    # must fail here rather than turn that name into a 500.
    for spelling in (name, name.upper(), name.title()):
        assert cookie_problem(spelling, "x") == ATTRIBUTE_RULE
        assert cookie_problem(spelling, None) == ATTRIBUTE_RULE


@pytest.mark.parametrize("name", [SESSION_COOKIE, "mservices_flash", "_xsrf"])
@pytest.mark.parametrize("action", ["set", "clear"])
async def test_the_cookies_mservices_manages_cannot_be_set_or_cleared(
    client: Client, name: str, action: str
) -> None:
    await register(client, "alice")
    browser = Browser(client)
    await browser.login("alice", PASSWORD)
    session = browser.cookies[SESSION_COOKIE]

    response = await browser.post("/cookie", {"action": action, "name": name, "value": "x"})

    assert response.status == 400
    assert "由 mservices 管理，不能在这里修改" in response.text
    assert browser.cookies[SESSION_COOKIE] == session
    assert "_xsrf" in browser.cookies
    assert browser.cookies.get(name) != "x"
    page = await browser.get("/cookie")
    assert "（已隐藏：HttpOnly）" in page.text, "the session cookie is listed without its value"
    assert browser.cookies[SESSION_COOKIE] not in page.text


async def test_a_form_without_the_xsrf_token_is_refused(client: Client) -> None:
    browser = Browser(client)
    await browser.get("/cookie")

    response = await browser.post(
        "/cookie", {"action": "set", "name": "theme", "value": "x"}, xsrf=False
    )

    assert response.status == 403
    assert "theme" not in browser.cookies


async def test_the_set_form_carries_the_xsrf_field(client: Client) -> None:
    page = await client.get("/cookie")

    main = re.search(r'<main class="content">.*?</main>', page.text, re.S)
    assert main is not None  # the header's language switch carries one of its own
    assert main.group(0).count('name="_xsrf"') == 1
    assert flash_of(page) is None


async def test_a_refusal_is_worded_in_chinese_by_default(client: Client) -> None:
    response = await Browser(client).post(
        "/cookie", {"action": "set", "name": "ok", "value": "a b"}
    )

    assert response.status == 400
    assert "Cookie 值最多 256 个可打印 ASCII 字符" in response.text
    assert "cookie value" not in response.text


async def test_the_page_speaks_english_when_english_is_chosen(client: Client) -> None:
    browser = english(Browser(client))
    flash = await browser.act("/cookie", {"action": "set", "name": "theme", "value": "dark"})
    assert flash.text == "cookie theme set"

    page = await browser.get("/cookie")

    assert "<h2>Set a cookie</h2>" in page.text
    assert "<th>Name</th><th>Value</th>" in page.text
    assert "设置 Cookie" not in page.text and "清除" not in page.text

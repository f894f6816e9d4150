"""The ``/login`` form's ``next``: only a local path is followed, checked like ``/redirect``'s;
and the form, its refusals and its greetings in the reader's language."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest

from repositories.users import UserRepository
from server.handlers.base import LANGUAGE_COOKIE, SESSION_COOKIE
from server.services import Services
from tests.conftest import Client, Response
from tests.server.handlers.test_admin_pages import Browser, Flash, flash_of
from tests.server.realtime.conftest import cookie_value

PASSWORD = "correct horse battery"
EVIL = [
    "/\t/evil.example/p",
    "/\r\nSet-Cookie: owned=1",
    "//evil.example/p",
    "/\\evil.example",
    "https://evil.example/",
]


async def add_user(services: Services, name: str = "ann") -> None:
    async with services.sessions() as session, session.begin():
        await UserRepository(session).add(
            name=name, password_hash=await services.passwords.hash(PASSWORD)
        )


async def post_login(
    client: Client, *, query_next: str | None = None, body_next: str | None = None
) -> Response:
    """Submit the form (with its XSRF token), ``next`` in the query and/or the body."""
    xsrf = cookie_value(await client.get("/login"), "_xsrf")
    fields = {"name": "ann", "pwd": PASSWORD, "_xsrf": xsrf}
    if body_next is not None:
        fields["next"] = body_next
    path = "/login" if query_next is None else f"/login?next={quote(query_next, safe='')}"
    return await client.post(
        path,
        body=urlencode(fields),
        headers={"Cookie": f"_xsrf={xsrf}", "Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.mark.parametrize("target", EVIL)
async def test_a_login_with_next_in_the_query_leaving_the_site_goes_home(
    client: Client, services: Services, target: str
) -> None:
    await add_user(services)
    response = await post_login(client, query_next=target)
    assert response.status == 302, response.text
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target", EVIL)
async def test_a_login_with_next_in_the_form_leaving_the_site_goes_home(
    client: Client, services: Services, target: str
) -> None:
    await add_user(services)
    response = await post_login(client, body_next=target)
    assert response.status == 302, response.text
    assert response.headers["Location"] == "/"


async def test_a_login_goes_on_to_a_local_next(client: Client, services: Services) -> None:
    await add_user(services)
    response = await post_login(client, body_next="/orders?page=2")
    assert response.status == 302
    assert response.headers["Location"] == "/orders?page=2"


@pytest.mark.parametrize("target", EVIL)
async def test_the_form_of_a_next_leaving_the_site_returns_home(
    client: Client, target: str
) -> None:
    page = await client.get(f"/login?next={quote(target, safe='')}")
    assert page.status == 200
    assert 'name="next" value="/"' in page.text


@pytest.mark.parametrize("target", EVIL)
async def test_a_logged_in_visitor_following_a_login_link_leaving_the_site_goes_home(
    client: Client, services: Services, target: str
) -> None:
    await add_user(services)
    logged_in = await post_login(client, body_next="/")
    session_cookie = f"{SESSION_COOKIE}={cookie_value(logged_in, SESSION_COOKIE)}"
    response = await client.get(
        f"/login?next={quote(target, safe='')}", headers={"Cookie": session_cookie}
    )
    assert response.status == 302, response.text
    assert response.headers["Location"] == "/"


# -- languages -------------------------------------------------------------------------------------


async def test_a_refused_login_says_why_in_the_readers_language(
    client: Client, services: Services
) -> None:
    await add_user(services)
    chinese, english = Browser(client), Browser(client)
    english.cookies[LANGUAGE_COOKIE] = "en_US"

    refusals = [
        await browser.post("/login", {"name": "ann", "pwd": "not it"})
        for browser in (chinese, english)
    ]

    assert [page.status for page in refusals] == [401, 401]
    assert "用户名或密码错误" in refusals[0].text
    assert "wrong name or password" in refusals[1].text
    assert "<h1>Log in</h1>" in refusals[1].text and "用户名" not in refusals[1].text


async def test_the_welcome_speaks_the_accounts_language_in_a_new_browser(
    client: Client, services: Services
) -> None:
    await add_user(services)
    await add_user(services, "bo")
    async with services.sessions() as session, session.begin():
        ann = await UserRepository(session).get_by_name("ann")
        assert ann is not None
        ann.language = "en_US"
    ann_browser, bo_browser = Browser(client), Browser(client)

    await ann_browser.login("ann", PASSWORD)
    await bo_browser.login("bo", PASSWORD)

    ann_home, bo_home = await ann_browser.get("/"), await bo_browser.get("/")
    assert flash_of(ann_home) == Flash("success", "Welcome, ann")
    assert '<html lang="en-US">' in ann_home.text
    assert flash_of(bo_home) == Flash("success", "欢迎, bo")


async def test_logging_out_is_confirmed_in_the_language_of_the_browser(
    client: Client, services: Services
) -> None:
    await add_user(services)
    browser = Browser(client)
    await browser.login("ann", PASSWORD)

    flash = await browser.act("/logout", back="/")

    assert flash == Flash("success", "已退出登录")
    browser.cookies[LANGUAGE_COOKIE] = "en_US"
    await browser.login("ann", PASSWORD)
    assert await browser.act("/logout", back="/") == Flash("success", "You are logged out")

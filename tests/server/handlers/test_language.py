"""``POST /language`` and how a reader's language is chosen: the account's choice, else this
browser's (the ``mservices_lang`` cookie), else ``Accept-Language``, else Chinese."""

from __future__ import annotations

import re

import pytest

from repositories.users import UserRepository
from server.handlers.base import LANGUAGE_COOKIE
from server.services import Services
from tests.conftest import Client, Response
from tests.server.handlers.test_admin_pages import Browser, Flash, flash_of

PASSWORD = "correct horse battery"
CHINESE_HOME = "一个原生异步的 Tornado 服务"
ENGLISH_HOME = "An async-native Tornado service"


async def add_user(services: Services, name: str = "ann") -> int:
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).add(
            name=name, password_hash=await services.passwords.hash(PASSWORD)
        )
        return user.id


async def stored_language(services: Services, user_id: int) -> str | None:
    async with services.sessions() as session:
        return (await UserRepository(session).get(user_id)).language


def speaks(page: Response) -> str:
    """Which language the home page ``page`` is written in."""
    assert page.status == 200, page.text
    chinese, english = CHINESE_HOME in page.text, ENGLISH_HOME in page.text
    assert chinese != english, "a page speaks one language"
    return "zh_CN" if chinese else "en_US"


def chosen_option(page: Response) -> str:
    """The value of the option the account page's language select has selected."""
    form = re.search(r'<form class="form account-language".*?</form>', page.text, re.S)
    assert form is not None
    selected = re.findall(r'<option value="([^"]+)"[^>]*\sselected>', form.group(0))
    assert len(selected) == 1, form.group(0)
    return selected[0]


async def choose(browser: Browser, language: str, next_url: str = "/") -> Response:
    response = await browser.post("/language", {"language": language, "next": next_url})
    assert response.status == 302, response.text
    return response


# -- a visitor ------------------------------------------------------------------------------------


async def test_a_visitor_switches_to_english_and_back_with_the_cookie(client: Client) -> None:
    browser = Browser(client)
    assert speaks(await browser.get("/")) == "zh_CN"

    response = await choose(browser, "en_US", "/cookie")

    assert response.headers["Location"] == "/cookie"
    assert browser.cookies[LANGUAGE_COOKIE] == "en_US"
    cookie = next(
        header
        for header in response.headers.get_list("Set-Cookie")
        if header.startswith(f"{LANGUAGE_COOKIE}=")
    )
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert speaks(await browser.get("/")) == "en_US"
    await choose(browser, "zh_CN")
    assert speaks(await browser.get("/")) == "zh_CN"


async def test_auto_forgets_the_visitors_choice(client: Client) -> None:
    browser = Browser(client)
    await choose(browser, "en_US")

    await choose(browser, "auto")

    assert LANGUAGE_COOKIE not in browser.cookies
    assert speaks(await browser.get("/")) == "zh_CN"


@pytest.mark.parametrize("language", ["fr_FR", "", "EN_us", "zh_CN<script>"])
async def test_a_language_not_offered_is_refused_with_a_flash_and_nothing_changes(
    client: Client, language: str
) -> None:
    browser = Browser(client)
    await choose(browser, "en_US")

    response = await browser.post("/language", {"language": language, "next": "/cookie"})

    assert response.status == 302 and response.headers["Location"] == "/cookie"
    assert browser.cookies[LANGUAGE_COOKIE] == "en_US"
    page = await browser.get("/cookie")
    assert flash_of(page) == Flash("error", "Choose one of the languages offered.")


async def test_the_refusal_of_a_bad_language_is_chinese_for_a_chinese_reader(
    client: Client,
) -> None:
    browser = Browser(client)

    flash = await browser.act("/language", {"language": "de_DE", "next": "/"}, back="/")

    assert flash == Flash("error", "请选择所提供的语言之一。")
    assert LANGUAGE_COOKIE not in browser.cookies


@pytest.mark.parametrize(
    "next_url", ["//evil.example/", "https://evil.example/", "/\\evil.example", "", "evil"]
)
async def test_next_stays_on_this_site(client: Client, next_url: str) -> None:
    response = await choose(Browser(client), "en_US", next_url)

    assert response.headers["Location"] == "/"


async def test_next_keeps_a_local_path_and_its_query(client: Client) -> None:
    response = await choose(Browser(client), "en_US", "/orders?page=2")

    assert response.headers["Location"] == "/orders?page=2"


async def test_the_switch_needs_the_xsrf_token(client: Client) -> None:
    browser = Browser(client)
    await browser.get("/")

    response = await browser.post("/language", {"language": "en_US", "next": "/"}, xsrf=False)

    assert response.status == 403
    assert LANGUAGE_COOKIE not in browser.cookies


# -- Accept-Language ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_language", "language"),
    [
        ("en-GB,en;q=0.9", "en_US"),
        ("en", "en_US"),
        ("fr", "zh_CN"),
        ("fr-FR,fr;q=0.9,de;q=0.8", "zh_CN"),
        ("zh-TW", "zh_CN"),
        ("zh-Hant-TW,en;q=0.5", "zh_CN"),
        ("fr;q=1.0, en;q=0.7, zh;q=0.5", "en_US"),
        ("en;q=0, zh;q=0.1", "zh_CN"),
        ("", "zh_CN"),
    ],
)
async def test_accept_language_picks_the_best_language_offered(
    client: Client, accept_language: str, language: str
) -> None:
    page = await client.get("/", headers={"Accept-Language": accept_language})

    assert speaks(page) == language
    assert f'<html lang="{language.replace("_", "-")}">' in page.text


async def test_a_visitors_choice_wins_over_accept_language(client: Client) -> None:
    browser = Browser(client)
    await choose(browser, "zh_CN")

    page = await client.get(
        "/", headers={**browser.cookie_header(), "Accept-Language": "en-GB,en;q=0.9"}
    )

    assert speaks(page) == "zh_CN"


async def test_a_visitor_without_a_choice_follows_accept_language(client: Client) -> None:
    page = await client.get("/", headers={"Accept-Language": "en-US"})

    assert speaks(page) == "en_US"
    # The header's switch offers the other language, named in that language.
    assert 'lang="zh-CN" title="Switch language">中文</button>' in page.text


# -- a logged-in user: the choice is stored on the account ---------------------------------------


async def test_a_users_choice_is_stored_on_the_account_and_follows_them_everywhere(
    client: Client, services: Services
) -> None:
    user_id = await add_user(services)
    here, elsewhere_already = Browser(client), Browser(client)
    await here.login("ann", PASSWORD)
    await elsewhere_already.login("ann", PASSWORD)

    await choose(here, "en_US", "/account")

    assert await stored_language(services, user_id) == "en_US"
    assert speaks(await here.get("/")) == "en_US"
    # Another session of the same account, already open: its cached login was refreshed.
    assert speaks(await elsewhere_already.get("/")) == "en_US"
    # A new browser (no cookie, a Chinese Accept-Language) speaks English once logged in.
    elsewhere = Browser(client)
    assert speaks(await elsewhere.get("/")) == "zh_CN"
    await elsewhere.login("ann", PASSWORD)
    page = await client.get(
        "/", headers={**elsewhere.cookie_header(), "Accept-Language": "zh-CN,zh;q=0.9"}
    )
    assert speaks(page) == "en_US"
    assert LANGUAGE_COOKIE not in elsewhere.cookies


async def test_the_accounts_choice_wins_over_this_browsers_cookie(
    client: Client, services: Services
) -> None:
    user_id = await add_user(services)
    async with services.sessions() as session, session.begin():
        await UserRepository(session).update(user_id, {"language": "zh_CN"})
    browser = Browser(client)
    await choose(browser, "en_US")
    assert speaks(await browser.get("/")) == "en_US"

    await browser.login("ann", PASSWORD)

    assert speaks(await browser.get("/")) == "zh_CN"


async def test_auto_clears_the_accounts_choice(client: Client, services: Services) -> None:
    user_id = await add_user(services)
    browser = Browser(client)
    await browser.login("ann", PASSWORD)
    await choose(browser, "en_US")

    await choose(browser, "auto", "/account")

    assert await stored_language(services, user_id) is None
    assert LANGUAGE_COOKIE not in browser.cookies
    assert speaks(await browser.get("/")) == "zh_CN"
    english = await client.get("/", headers={**browser.cookie_header(), "Accept-Language": "en"})
    assert speaks(english) == "en_US", "following the browser again"


async def test_a_bad_value_leaves_the_accounts_choice_alone(
    client: Client, services: Services
) -> None:
    user_id = await add_user(services)
    browser = Browser(client)
    await browser.login("ann", PASSWORD)
    await choose(browser, "en_US")

    flash = await browser.act("/language", {"language": "xx", "next": "/account"}, back="/account")

    assert flash == Flash("error", "Choose one of the languages offered.")
    assert await stored_language(services, user_id) == "en_US"


async def test_the_api_answers_a_user_in_the_language_of_their_account(
    client: Client, services: Services
) -> None:
    await add_user(services)
    browser = Browser(client)
    await browser.login("ann", PASSWORD)
    await choose(browser, "en_US")
    login = await client.post("/user/login", json_body={"name": "ann", "pwd": PASSWORD})
    token = login.json()["token"]

    refused = await client.request(
        "PUT",
        "/user/password",
        json_body={"old_pwd": "not it at all", "new_pwd": "a brand new passphrase"},
        headers={"Authorization": f"Bearer {token}", "Accept-Language": "zh-CN"},
    )

    assert refused.status == 403
    assert refused.json()["msg"] == "the current password is wrong"
    assert refused.json()["errors"] == [
        {"field": "old_pwd", "reason": "does not match the current password"}
    ]


# -- the account page's language section ----------------------------------------------------------


async def test_the_account_page_offers_the_languages_with_the_current_choice_selected(
    client: Client, services: Services
) -> None:
    await add_user(services)
    browser = Browser(client)
    await browser.login("ann", PASSWORD)

    page = await browser.get("/account")
    assert chosen_option(page) == "auto"
    assert "跟随浏览器" in page.text and '<h2 id="language-title">语言</h2>' in page.text
    assert 'action="/language"' in page.text
    assert '<input type="hidden" name="next" value="/account">' in page.text
    assert '<option value="en_US" lang="en-US">English</option>' in page.text

    await choose(browser, "en_US", "/account")
    page = await browser.get("/account")
    assert chosen_option(page) == "en_US"
    assert (
        "Follow the browser" in page.text and '<h2 id="language-title">Language</h2>' in page.text
    )
    assert '<option value="zh_CN" lang="zh-CN">中文</option>' in page.text

    await choose(browser, "zh_CN", "/account")
    assert chosen_option(await browser.get("/account")) == "zh_CN"

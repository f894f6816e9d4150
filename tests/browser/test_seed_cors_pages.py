"""The seed's §4.3 cross-origin pages, clicked in Chromium against the real API.

Both pages POST ``{"name": "cxk", "pwd": "123"}`` to ``/user``. For a free name that is
registration; "123" breaks the password policy, so the API answers 422 with ``msg``, with CORS
headers. For an existing account it is a login (200 ``{"msg": "success", "token"}``). The guide
gives the fetch variant only as a ``<script>``: ``fetch.html`` is the XMLHttpRequest page with its
script replaced by that one, both verbatim.

- ``fetch.html`` writes ``msg`` into ``#result`` whatever the status: it must show the API's msg.
- ``xhr.html`` writes ``#result`` only on a 200, so for it the test proves that the preflight and
  the POST succeeded at the network level and that the page's script could read the 422 (status
  and body), which CORS would hide from it otherwise.
- ``msg`` is in the language the browser asks for (its ``Accept-Language``; Chinese by default);
  a successful login's ``"msg": "success"`` is the same word in every language.
- With the API allowing another origin only, the browser refuses: a CORS error, ``#result`` empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from repositories.models import AuditEntry
from repositories.users import UserRepository
from server.app import make_app
from server.i18n import DEFAULT_LANGUAGE, negotiate
from server.services import Services, open_services
from tests.browser.conftest import TIMEOUT_MS, OpenPage, SeedSite
from tests.conftest import Client, make_settings, serve_app

SEED_BODY = {"name": "cxk", "pwd": "123"}
POLICY_MSG = {"zh_CN": "密码不符合要求", "en_US": "the password does not meet the policy"}
"""The API's ``msg`` for the seed pages' weak password, in each language it speaks."""

# Records what the page's XMLHttpRequest delivered to scripts (its ``req`` is a local variable);
# the page's own HTML and script stay untouched.
RECORD_XHR = """
window.__xhrLoads = [];
const seedOpen = XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open = function (...args) {
    this.addEventListener("loadend", () => {
        window.__xhrLoads.push({status: this.status, body: this.responseText});
    });
    return seedOpen.apply(this, args);
};
"""


async def the_apis_answer(client: Client, accept_language: str | None) -> dict[str, Any]:
    """What the API answers the seed pages' body, asked directly in the language the browser
    asked for (a 422: nothing is created)."""
    headers = {"Accept-Language": accept_language} if accept_language else {}
    response = await client.post("/user", json_body=SEED_BODY, headers=headers)
    assert response.status == 422
    body: dict[str, Any] = response.json()
    assert body["msg"] == POLICY_MSG[negotiate(accept_language) or DEFAULT_LANGUAGE]
    return body


def header(headers: dict[str, str], name: str) -> str:
    """A header of a CDP response, whatever the case of its name."""
    return next(value for key, value in headers.items() if key.lower() == name.lower())


async def test_the_fetch_page_shows_the_apis_msg_across_origins(
    client: Client, seed_site: SeedSite, open_page: OpenPage
) -> None:
    origin = await seed_site(client.base_url)
    watched = await open_page(f"{origin}/fetch.html")
    page = watched.page

    async with page.expect_response(lambda r: r.url == f"{client.base_url}/user") as answer:
        await page.get_by_role("button", name="登录").click()
    response = await answer.value
    expected = await the_apis_answer(client, await response.request.header_value("accept-language"))
    await page.wait_for_function(
        "document.getElementById('result').textContent !== ''", timeout=TIMEOUT_MS
    )

    await watched.keep_screenshot("seed-fetch-page")
    assert await page.inner_text("#result") == expected["msg"]
    assert response.request.method == "POST"
    assert response.status == 422
    assert response.headers["access-control-allow-origin"] == "*"
    assert watched.cors_console_errors() == []
    assert watched.cors_errors == []


async def test_the_xhr_page_reads_the_cross_origin_answer_after_a_preflight(
    client: Client, seed_site: SeedSite, open_page: OpenPage
) -> None:
    origin = await seed_site(client.base_url)
    watched = await open_page("about:blank")
    page = watched.page
    await page.add_init_script(RECORD_XHR)
    await page.goto(f"{origin}/xhr.html")

    async with page.expect_response(lambda r: r.url == f"{client.base_url}/user") as answer:
        await page.get_by_role("button", name="登录").click()
    response = await answer.value
    expected = await the_apis_answer(client, await response.request.header_value("accept-language"))
    await page.wait_for_function("window.__xhrLoads.length > 0", timeout=TIMEOUT_MS)
    await watched.wait_until(lambda: len(watched.preflights) > 0, "the CORS preflight")

    preflight = watched.preflights[0]["response"]
    assert preflight["status"] == 204
    assert preflight["url"] == f"{client.base_url}/user"
    assert header(preflight["headers"], "Access-Control-Allow-Origin") == "*"
    assert "POST" in header(preflight["headers"], "Access-Control-Allow-Methods")
    assert "Content-Type" in header(preflight["headers"], "Access-Control-Allow-Headers")
    assert response.request.method == "POST"
    assert response.status == 422
    loads = await page.evaluate("window.__xhrLoads")
    assert [load["status"] for load in loads] == [422]
    assert loads[0]["body"] and expected["msg"] in loads[0]["body"]
    await watched.keep_screenshot("seed-xhr-page")
    # The seed page writes #result only for a 200, so it stays empty for this 422.
    assert await page.inner_text("#result") == ""
    assert watched.cors_console_errors() == []
    assert watched.cors_errors == []


async def test_the_xhr_page_logs_an_existing_account_in_and_shows_success(
    client: Client, services: Services, seed_site: SeedSite, open_page: OpenPage
) -> None:
    """Seed §4.3's page, verbatim: for an account that exists (here one carried over from the
    seed's data, password and all), its POST /user is a login, answered 200 with msg."""
    async with services.sessions() as session, session.begin():
        await UserRepository(session).add(
            name="cxk", password_hash=await services.passwords.hash(SEED_BODY["pwd"])
        )
    origin = await seed_site(client.base_url)
    watched = await open_page(f"{origin}/xhr.html")
    page = watched.page

    async with page.expect_response(lambda r: r.url == f"{client.base_url}/user") as answer:
        await page.get_by_role("button", name="登录").click()
    response = await answer.value
    await page.wait_for_function(
        "document.getElementById('result').textContent !== ''", timeout=TIMEOUT_MS
    )

    await watched.keep_screenshot("seed-xhr-page-login")
    assert response.status == 200
    assert await page.inner_text("#result") == "success"
    assert watched.cors_errors == []
    async with services.sessions() as session:
        actions = (await session.scalars(select(AuditEntry.action))).all()
    assert "login" in actions


async def test_an_origin_the_api_does_not_allow_gets_a_cors_error(
    tmp_path: Path, sqlite_url: str, seed_site: SeedSite, open_page: OpenPage
) -> None:
    settings = make_settings(tmp_path, sqlite_url, cors_origins=["http://127.0.0.1:1"])
    services = await open_services(settings)
    server, api_base_url = await serve_app(make_app(settings, services))
    try:
        origin = await seed_site(api_base_url)
        watched = await open_page(f"{origin}/fetch.html")
        page = watched.page

        await page.get_by_role("button", name="登录").click()
        await watched.wait_until(lambda: bool(watched.cors_console_errors()), "a CORS error")
        await watched.wait_until(lambda: bool(watched.cors_errors), "the blocked request")

        await watched.keep_screenshot("seed-fetch-page-refused")
        message = watched.cors_console_errors()[0]
        assert f"from origin '{origin}' has been blocked by CORS policy" in message
        assert "No 'Access-Control-Allow-Origin' header" in message
        refusal = watched.cors_errors[0]["corsErrorStatus"]["corsError"]
        assert refusal == "PreflightMissingAllowOriginHeader"
        assert await page.inner_text("#result") == ""
    finally:
        server.stop()
        await server.close_all_connections()
        await services.close()

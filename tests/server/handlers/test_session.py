"""The ``/login`` form's ``next``: only a local path is followed, checked like ``/redirect``'s."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest

from repositories.users import UserRepository
from server.handlers.base import SESSION_COOKIE
from server.services import Services
from tests.conftest import Client, Response
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

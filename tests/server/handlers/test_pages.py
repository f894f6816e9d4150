"""Pages: the index shows the menus granted to anonymous visitors, through Nav and Menu."""

from __future__ import annotations

import re

from repositories.menus import MenuRepository
from repositories.roles import RoleRepository
from server.menu_access import ANONYMOUS_ROLE
from server.services import Services
from tests.conftest import Client


async def grant_anonymous(services: Services) -> None:
    """Publish a small tree to visitors: Home, and Docs with a nested API page; hide Admin."""
    async with services.sessions() as session, session.begin():
        menus = MenuRepository(session)
        roles = RoleRepository(session)
        home = await menus.add(title="Home", url="/")
        docs = await menus.add(title="Docs", url=None, sort=1)
        api = await menus.add(title="API <b>", url="/docs/api", parent_id=docs.id)
        await menus.add(title="Admin", url="/admin", sort=2)
        anonymous = await roles.add(name=ANONYMOUS_ROLE)
        await roles.set_menus(anonymous.id, {home.id, api.id})


async def test_the_index_shows_only_the_menus_granted_to_visitors(
    client: Client, services: Services
) -> None:
    await grant_anonymous(services)
    response = await client.get("/")
    assert response.status == 200
    nav = re.search(r'<nav class="nav".*?</nav>', response.text, re.S)
    assert nav is not None
    assert "Home" in nav.group(0) and "Docs" in nav.group(0)
    assert "API" not in nav.group(0), "Nav shows top-level menus only"
    sidebar = re.search(r'<aside class="sidebar">.*?</aside>', response.text, re.S)
    assert sidebar is not None
    assert 'href="/docs/api"' in sidebar.group(0), "Menu shows the nested tree"
    assert "Admin" not in response.text


async def test_menu_titles_are_escaped(client: Client, services: Services) -> None:
    await grant_anonymous(services)
    response = await client.get("/")
    assert "API &lt;b&gt;" in response.text
    assert "API <b>" not in response.text


async def test_the_index_renders_without_any_menus(client: Client) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert "No menus are published for visitors yet." in response.text


async def test_static_assets_are_served_under_s_with_a_version(client: Client) -> None:
    page = await client.get("/")
    match = re.search(r'href="(/s/css/site\.css\?v=[0-9a-f]+)"', page.text)
    assert match is not None
    asset = await client.get(match.group(1))
    assert asset.status == 200
    assert "text/css" in asset.headers["Content-Type"]

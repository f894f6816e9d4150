"""Fixtures shared by the handler tests."""

from __future__ import annotations

import pytest

from server.demo import load_demo
from server.services import Services


@pytest.fixture
async def demo(services: Services) -> dict[str, str]:
    """The demo roles, menus and users; returns the users' passwords."""
    async with services.sessions() as session, session.begin():
        result = await load_demo(session, services.passwords)
    return result.new_credentials

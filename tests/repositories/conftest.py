"""Fixtures for repository tests: empty (unmigrated) databases and a statement counter.

``empty_database_url`` never touches the shared MariaDB test database: its MariaDB half creates a
scratch database of its own beside it (named after it, with a random suffix so that concurrent
runs cannot collide) and drops it afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.db import create_engine
from tests.conftest import REQUIRE_SERVICES, service_url

NO_SUCH_ID = 2_000_000_000
"""An id no test row ever gets (MariaDB's auto-increment keeps counting across tests)."""


async def _scratch_mariadb_database() -> AsyncIterator[str]:
    """Create an empty MariaDB database beside the test database; drop it when done."""
    url = make_url(service_url("MSERVICES_TEST_MYSQL_URL", "MariaDB"))
    name = f"{url.database}_migrations_{secrets.token_hex(4)}"
    server = create_engine(
        url.set(database="").render_as_string(hide_password=False), connect_timeout=3
    )
    try:
        try:
            async with server.begin() as connection:
                await connection.execute(
                    text(
                        f"CREATE DATABASE IF NOT EXISTS `{name}` "
                        "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                    )
                )
        except Exception as error:  # any failure to connect: reported as the skip reason
            message = f"MariaDB at {url.render_as_string()} does not answer: {error}"
            if REQUIRE_SERVICES:
                pytest.fail(message)
            pytest.skip(message)
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            async with server.begin() as connection:
                await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await server.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with no tables at all: a new SQLite file, or a scratch MariaDB database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    async for url in _scratch_mariadb_database():
        yield url


@pytest.fixture
async def empty_mariadb_url() -> AsyncIterator[str]:
    """A scratch MariaDB database with no tables, for checks only MariaDB can answer."""
    async for url in _scratch_mariadb_database():
        yield url


@pytest.fixture
async def empty_engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``empty_database_url``."""
    engine = create_engine(empty_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collect the SQL of every statement ``engine`` sends while the block runs."""
    statements: list[str] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

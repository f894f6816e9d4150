"""Shared fixtures: isolated databases (SQLite always, MariaDB when configured), a live app.

Service tiers:
- ``MSERVICES_TEST_MYSQL_URL`` (e.g. ``mysql+asyncmy://root@127.0.0.1:3306/mservices_test``)
  enables the MariaDB half of every ``database_url`` test;
- ``MSERVICES_TEST_REDIS_URL`` enables Redis tests;
- ``MSERVICES_TEST_REQUIRE_SERVICES=1`` turns a missing service from a skip into a failure.

Isolation: each SQLite test gets its own copy of a migrated template file; each MariaDB test
shares one migrated schema and has every row deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders
from tornado.testing import bind_unused_port
from tornado.web import Application

from repositories import schema
from repositories.db import create_engine, make_session_factory
from repositories.models import Base, Menu
from server.app import make_app
from server.services import Services, open_services
from server.settings import Settings

REQUIRE_SERVICES = os.environ.get("MSERVICES_TEST_REQUIRE_SERVICES") == "1"


def service_url(variable: str, what: str) -> str:
    """The URL of an external test service, or skip (fail, when services are required)."""
    url = os.environ.get(variable, "").strip()
    if not url:
        reason = f"{what} tests need {variable} (set by .ci/run)"
        if REQUIRE_SERVICES:
            pytest.fail(f"MSERVICES_TEST_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return url


async def _reachable(url: str) -> str | None:
    engine = create_engine(url, connect_timeout=3)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return None
    except Exception as error:
        return str(error)
    finally:
        await engine.dispose()


async def _prepare_mysql_database(url: str) -> None:
    """Create the database if missing and bring it to an empty schema at head."""
    parsed = make_url(url)
    server = create_engine(parsed.set(database="").render_as_string(hide_password=False))
    try:
        async with server.begin() as connection:
            await connection.execute(
                text(
                    f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            )
    finally:
        await server.dispose()
    engine = create_engine(url)
    try:
        await schema.downgrade(engine, "base")
        await schema.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The migrated MariaDB test database (prepared once per session), or skip."""
    url = service_url("MSERVICES_TEST_MYSQL_URL", "MariaDB")
    problem = asyncio.run(_reachable_server(url))
    if problem is not None:
        message = f"MariaDB at {make_url(url).render_as_string()} does not answer: {problem}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    asyncio.run(_prepare_mysql_database(url))
    return url


async def _reachable_server(url: str) -> str | None:
    return await _reachable(make_url(url).set(database="").render_as_string(hide_password=False))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; tests copy it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.db"

    async def migrate() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await schema.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database: SQLite, then MariaDB when configured."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("mysql_url")
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty SQLite database for tests that need only one backend."""
    path = tmp_path / "test.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``database_url``; MariaDB rows are deleted after the test."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        try:
            if engine.dialect.name in ("mysql", "mariadb"):
                await wipe(engine)
        finally:
            await engine.dispose()


async def wipe(engine: AsyncEngine) -> None:
    """Delete every row of every table but the lock rows, children first (menus are unlinked
    first: InnoDB checks the self-referencing parent key row by row)."""
    async with engine.begin() as connection:
        await connection.execute(update(Menu).values(parent_id=None))
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "app_lock":  # the lock rows the migration creates stay
                await connection.execute(delete(table))


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The session factory of ``engine``."""
    return make_session_factory(engine)


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One session; the test commits what it wants to persist."""
    async with sessions() as session:
        yield session


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for a test: isolated data dir, no .env, a random cookie secret, and argon2's
    cheapest allowed cost (one pass over 8 MiB instead of two over 19 MiB: every login and
    sign-up of the suite hashes; the production parameters are tested in
    tests/server/security/test_passwords.py and by the processes the CLI tests start)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "cookie_secret": secrets.token_hex(32),
        "tcp_port": 0,
        "password_time_cost": 1,
        "password_memory_kib": 8 * 1024,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """Settings on a fresh SQLite database."""
    return make_settings(tmp_path, sqlite_url)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """Services opened for ``settings`` and closed after the test."""
    opened = await open_services(settings)
    try:
        yield opened
    finally:
        await opened.close()


@dataclass(frozen=True, slots=True)
class Response:
    """What a test client saw."""

    status: int
    headers: HTTPHeaders
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class Client:
    """A tiny HTTP client for a live test server (never raises on error statuses)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = AsyncHTTPClient(force_instance=True)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> Response:
        """Send one request and return the response, whatever its status."""
        all_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            all_headers.setdefault("Content-Type", "application/json")
        request = HTTPRequest(
            self.base_url + path,
            method=method,
            headers=all_headers,
            body=body,
            allow_nonstandard_methods=True,
            follow_redirects=follow_redirects,
            request_timeout=30,
        )
        response = await self._http.fetch(request, raise_error=False)
        if response.code == 599:
            raise ConnectionError(f"{method} {path}: {response.error}")
        return Response(
            status=response.code,
            headers=response.headers,
            body=response.body or b"",
        )

    async def get(self, path: str, **kwargs: Any) -> Response:
        """GET ``path``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        """POST ``path``."""
        return await self.request("POST", path, **kwargs)

    def close(self) -> None:
        """Release the client's connections."""
        self._http.close()


async def serve_app(app: Application) -> tuple[HTTPServer, str]:
    """Listen on an unused loopback port; returns the server and its base URL."""
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[Client]:
    """A client of the real application, served in-process on an unused port."""
    server, base_url = await serve_app(make_app(settings, services))
    http = Client(base_url)
    try:
        yield http
    finally:
        http.close()
        server.stop()
        await server.close_all_connections()


@pytest.fixture
def project_dir() -> Iterator[Path]:
    """The repository root."""
    yield Path(__file__).resolve().parent.parent

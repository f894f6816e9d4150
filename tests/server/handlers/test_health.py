"""``/healthz`` (alive, no dependency), ``/readyz`` (database and Redis) and their failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from server.app import make_app
from server.services import open_services
from tests.conftest import Client, make_settings, serve_app, service_url


@asynccontextmanager
async def app_client(tmp_path: Path, database_url: str, **overrides: Any) -> AsyncIterator[Client]:
    """A client of the app opened on ``database_url`` with settings ``overrides``."""
    settings = make_settings(tmp_path, database_url, **overrides)
    services = await open_services(settings)
    server, base_url = await serve_app(make_app(settings, services))
    http = Client(base_url)
    try:
        yield http
    finally:
        http.close()
        server.stop()
        await server.close_all_connections()
        await services.close()


def unreachable_database(tmp_path: Path) -> str:
    """A SQLite URL whose directory does not exist: every connection fails."""
    return f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}"


async def test_healthz_answers_ok(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_answers_ok_even_when_the_database_is_unreachable(tmp_path: Path) -> None:
    async with app_client(tmp_path, unreachable_database(tmp_path)) as http:
        response = await http.get("/healthz")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_database_ready(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_readyz_is_503_naming_the_database_when_it_is_unreachable(tmp_path: Path) -> None:
    async with app_client(tmp_path, unreachable_database(tmp_path)) as http:
        response = await http.get("/readyz")
    assert response.status == 503
    body = response.json()
    assert set(body) == {"msg", "code", "errors"}
    assert body["code"] == "not_ready"
    assert [item["field"] for item in body["errors"]] == ["database"]
    assert body["msg"] == "未就绪：database 不可用"
    assert "Traceback" not in response.text


async def test_readyz_words_its_refusal_in_english_when_asked(tmp_path: Path) -> None:
    async with app_client(tmp_path, unreachable_database(tmp_path)) as http:
        response = await http.get("/readyz", headers={"Accept-Language": "en"})
    assert response.status == 503
    assert response.json()["msg"] == "not ready: database unavailable"


@pytest.mark.redis
async def test_readyz_checks_redis_when_it_is_configured(tmp_path: Path, sqlite_url: str) -> None:
    redis_url = service_url("MSERVICES_TEST_REDIS_URL", "Redis")
    async with app_client(tmp_path, sqlite_url, redis_url=redis_url) as http:
        response = await http.get("/readyz")
    assert response.status == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


@pytest.mark.redis
async def test_readyz_is_503_naming_redis_when_redis_does_not_answer(
    tmp_path: Path, sqlite_url: str
) -> None:
    service_url("MSERVICES_TEST_REDIS_URL", "Redis")  # the Redis tier, even if unused here
    async with app_client(tmp_path, sqlite_url, redis_url="redis://127.0.0.1:1/0") as http:
        response = await http.get("/readyz")
    assert response.status == 503
    body = response.json()
    assert body["code"] == "not_ready"
    assert [item["field"] for item in body["errors"]] == ["redis"]

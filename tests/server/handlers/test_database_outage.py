"""A database lost while serving: 503 with the envelope, and service resumes by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from server.app import make_app
from server.services import open_services
from tests.conftest import Client, make_settings, serve_app
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.mariadb


@pytest.fixture
async def proxied_client(mysql_url: str, tmp_path: Path) -> AsyncIterator[tuple[Client, TcpProxy]]:
    target = make_url(mysql_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 3306)
    await proxy.start()
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = make_settings(tmp_path, url, db_connect_timeout=2)
    services = await open_services(settings)
    server, base_url = await serve_app(make_app(settings, services))
    http = Client(base_url)
    try:
        yield http, proxy
    finally:
        http.close()
        server.stop()
        await proxy.cut()
        await services.close()


async def test_losing_the_database_is_503_and_service_resumes_when_it_returns(
    proxied_client: tuple[Client, TcpProxy],
) -> None:
    client, proxy = proxied_client
    assert (await client.get("/readyz")).status == 200

    await proxy.cut()
    down = await client.get("/readyz")
    assert down.status == 503
    assert down.json()["code"] == "not_ready"
    assert [item["field"] for item in down.json()["errors"]] == ["database"]
    assert (await client.get("/healthz")).status == 200  # alive: the process itself is fine
    login = await client.post("/user/login", json_body={"name": "cxk", "pwd": "not-checked"})
    assert login.status == 503
    assert login.json()["code"] == "database_unavailable"
    page = await client.get("/", headers={"Accept": "text/html"})
    assert page.status == 503
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Traceback" not in page.text
    assert "服务暂时不可用" in page.text and '<a class="error-home" href="/">' in page.text

    await proxy.restore()
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/")).status == 200

"""``/healthz``: ok while the database answers, 503 with the envelope when it does not."""

from __future__ import annotations

from pathlib import Path

from server.app import make_app
from server.services import open_services
from tests.conftest import Client, make_settings, serve_app


async def test_healthz_answers_ok_when_the_database_answers(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_is_503_with_the_envelope_when_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-dir" / "db.sqlite"
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{missing}")
    services = await open_services(settings)
    server, base_url = await serve_app(make_app(settings, services))
    http = Client(base_url)
    try:
        response = await http.get("/healthz")
    finally:
        http.close()
        server.stop()
        await services.close()
    assert response.status == 503
    body = response.json()
    assert body["code"] == "database_unavailable"
    assert set(body) == {"msg", "code", "errors"}
    assert "Traceback" not in response.text

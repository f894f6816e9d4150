"""The seed's §4.1 client, as written: ``requests.get(url, json={...})`` logs in.

``requests`` blocks, and the server under test runs on this test's event loop, so every call is
made from a worker thread (``asyncio.to_thread``): the loop keeps serving while the client waits.
"""

from __future__ import annotations

import asyncio

import requests

from tests.conftest import Client

PASSWORD = "correct horse battery"


async def test_the_seed_requests_client_logs_in_with_a_json_body_on_get(client: Client) -> None:
    registered = await client.post("/user", json_body={"name": "cxk", "pwd": PASSWORD})
    assert registered.status == 201, registered.text
    url = f"{client.base_url}/user"

    resp = await asyncio.to_thread(
        requests.get, url, json={"name": "cxk", "pwd": PASSWORD}, timeout=30
    )

    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["msg"] == "success"
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    me = await client.get("/user/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status == 200
    assert me.json()["user"]["name"] == "cxk"


async def test_the_seed_requests_client_sees_a_wrong_password_as_401_json(client: Client) -> None:
    registered = await client.post("/user", json_body={"name": "cxk", "pwd": PASSWORD})
    assert registered.status == 201, registered.text

    resp = await asyncio.to_thread(
        requests.get, f"{client.base_url}/user", json={"name": "cxk", "pwd": "123"}, timeout=30
    )

    assert resp.status_code == 401
    body = resp.json()
    assert body["code"] == "invalid_credentials"
    assert "token" not in body


async def test_success_is_the_same_word_in_every_language(client: Client) -> None:
    registered = await client.post("/user", json_body={"name": "cxk", "pwd": PASSWORD})
    assert registered.status == 201, registered.text
    url = f"{client.base_url}/user"

    for language in ("zh-CN", "en-US", "fr"):
        resp = await asyncio.to_thread(
            requests.get,
            url,
            json={"name": "cxk", "pwd": PASSWORD},
            headers={"Accept-Language": language},
            timeout=30,
        )
        assert resp.status_code == 200
        assert resp.json()["msg"] == "success", language


async def test_a_refusal_to_the_seed_client_is_chinese_unless_it_asks_otherwise(
    client: Client,
) -> None:
    registered = await client.post("/user", json_body={"name": "cxk", "pwd": PASSWORD})
    assert registered.status == 201, registered.text
    url = f"{client.base_url}/user"

    chinese = await asyncio.to_thread(
        requests.get, url, json={"name": "cxk", "pwd": "123"}, timeout=30
    )
    english = await asyncio.to_thread(
        requests.get,
        url,
        json={"name": "cxk", "pwd": "123"},
        headers={"Accept-Language": "en"},
        timeout=30,
    )

    assert chinese.json()["msg"] == "用户名或密码错误"
    assert english.json()["msg"] == "wrong name or password"
    assert chinese.json()["code"] == english.json()["code"] == "invalid_credentials"

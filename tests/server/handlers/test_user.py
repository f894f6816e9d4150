"""The /user API: every call of the contract, and every way it refuses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from repositories.audit import AuditRepository
from repositories.models import AuthToken, User
from repositories.users import UserRepository
from server.handlers.base import MAX_JSON_DEPTH
from server.security.passwords import PasswordHasher
from server.services import Services
from tests.conftest import Client, Response

PASSWORD = "correct horse battery"
NEW_PASSWORD = "tr0ub4dor and more"


async def register(
    client: Client, name: str = "cxk", pwd: str = PASSWORD, **extra: Any
) -> Response:
    response = await client.post("/user", json_body={"name": name, "pwd": pwd, **extra})
    assert response.status == 201, response.text
    return response


async def login(client: Client, name: str = "cxk", pwd: str = PASSWORD, **extra: Any) -> str:
    response = await client.post("/user/login", json_body={"name": name, "pwd": pwd, **extra})
    assert response.status == 200, response.text
    token: str = response.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_superuser(services: Services, name: str) -> None:
    async with services.sessions() as session, session.begin():
        await session.execute(update(User).where(User.name == name).values(is_superuser=True))


# -- login ---------------------------------------------------------------------------------


async def test_the_seed_client_logs_in_with_get_and_a_json_body(client: Client) -> None:
    await register(client)
    response = await client.get(
        "/user", json_body={"name": "cxk", "pwd": PASSWORD, "mobile_type": 2}
    )
    assert response.status == 200
    body = response.json()
    assert body["msg"] == "success"
    assert len(body["token"]) == 43
    assert body["user"]["name"] == "cxk"
    assert body["user"]["last_login_device"] == "ios"
    assert "password_hash" not in body["user"]


async def test_post_user_login_returns_a_token_that_authenticates(client: Client) -> None:
    await register(client)
    token = await login(client)
    me = await client.get("/user/me", headers=bearer(token))
    assert me.status == 200
    assert me.json()["user"]["name"] == "cxk"


async def test_unknown_name_wrong_password_and_inactive_account_fail_alike(
    client: Client, services: Services
) -> None:
    await register(client, "alice")
    await register(client, "bob")
    async with services.sessions() as session, session.begin():
        await session.execute(update(User).where(User.name == "bob").values(is_active=False))
    attempts = [
        {"name": "nobody", "pwd": PASSWORD},
        {"name": "alice", "pwd": "not the password"},
        {"name": "bob", "pwd": PASSWORD},
    ]
    answers = []
    for body in attempts:
        response = await client.post("/user/login", json_body=body)
        answers.append((response.status, response.text))
    assert answers[0][0] == 401
    assert answers[0] == answers[1] == answers[2]


async def test_an_unknown_mobile_type_is_422(client: Client) -> None:
    response = await client.post(
        "/user/login", json_body={"name": "cxk", "pwd": PASSWORD, "mobile_type": 9}
    )
    assert response.status == 422
    assert [item["field"] for item in response.json()["errors"]] == ["mobile_type"]


async def test_repeated_failures_are_throttled_with_retry_after(client: Client) -> None:
    await register(client)
    statuses = []
    for _ in range(6):
        response = await client.post("/user/login", json_body={"name": "cxk", "pwd": "wrong pass"})
        statuses.append(response.status)
    assert statuses == [401] * 6
    locked = await client.post("/user/login", json_body={"name": "cxk", "pwd": PASSWORD})
    assert locked.status == 429
    assert locked.json()["code"] == "too_many_attempts"
    assert int(locked.headers["Retry-After"]) >= 1


async def test_logins_and_failures_are_audited_without_secrets(
    client: Client, services: Services
) -> None:
    await register(client)
    token = await login(client)
    await client.post("/user/login", json_body={"name": "cxk", "pwd": "wrong pass!"})
    await client.request("DELETE", "/user", headers=bearer(token))
    async with services.sessions() as session:
        entries = await AuditRepository(session).list()
    actions = [entry.action for entry in reversed(entries)]
    assert actions == ["register", "login", "login_failed", "logout"]
    assert all(entry.client_ip == "127.0.0.1" for entry in entries)
    text = " ".join(f"{e.actor} {e.detail}" for e in entries)
    assert PASSWORD not in text and "wrong pass!" not in text and token not in text


async def test_a_login_rehashes_a_password_made_with_old_parameters(
    client: Client, services: Services
) -> None:
    old = PasswordHasher(time_cost=3, memory_kib=8 * 1024)  # not the parameters in use
    try:
        old_hash = await old.hash(PASSWORD)
    finally:
        old.close()
    async with services.sessions() as session, session.begin():
        await UserRepository(session).add(name="legacy", password_hash=old_hash)
    await login(client, "legacy")
    async with services.sessions() as session:
        user = await UserRepository(session).get_by_name("legacy")
    assert user is not None
    assert user.password_hash != old_hash
    assert not services.passwords.needs_rehash(user.password_hash)


# -- registration ---------------------------------------------------------------------------


async def test_registration_answers_201_with_the_user(client: Client) -> None:
    response = await register(client, mobile="13812345678", city="太原")
    body = response.json()
    assert body["msg"] == "success"
    assert body["user"]["mobile"] == "13812345678"
    assert body["user"]["city"] == "太原"
    assert body["user"]["is_superuser"] is False


async def test_a_taken_name_is_409(client: Client) -> None:
    await register(client)
    response = await client.post(
        "/user", json_body={"name": "cxk", "pwd": NEW_PASSWORD, "city": "太原"}
    )
    assert response.status == 409
    assert response.json()["code"] == "name_taken"


# -- seed §4.3: POST /user with exactly name and pwd ----------------------------------------


async def test_the_seed_pages_post_of_an_existing_name_and_its_password_logs_in(
    client: Client, services: Services
) -> None:
    await register(client)
    response = await client.post("/user", json_body={"name": "cxk", "pwd": PASSWORD})
    assert response.status == 200, response.text
    body = response.json()
    assert body["msg"] == "success"
    me = await client.get("/user/me", headers=bearer(body["token"]))
    assert me.status == 200 and me.json()["user"]["name"] == "cxk"
    async with services.sessions() as session:
        actions = [entry.action for entry in await AuditRepository(session).list()]
    assert actions[0] == "login"


async def test_the_seed_pages_post_with_a_wrong_password_is_401_audited_and_throttled(
    client: Client, services: Services
) -> None:
    await register(client)
    for _ in range(6):
        refused = await client.post("/user", json_body={"name": "cxk", "pwd": "wrong pass"})
        assert refused.status == 401
        assert refused.json()["code"] == "invalid_credentials"
    async with services.sessions() as session:
        actions = [entry.action for entry in await AuditRepository(session).list()]
    assert actions[:6] == ["login_failed"] * 6
    locked = await client.post("/user", json_body={"name": "cxk", "pwd": PASSWORD})
    assert locked.status == 429
    assert "Retry-After" in locked.headers


async def test_the_seed_pages_post_of_a_free_name_still_registers(client: Client) -> None:
    response = await client.post("/user", json_body={"name": "newbie", "pwd": PASSWORD})
    assert response.status == 201
    assert response.json()["user"]["name"] == "newbie"
    assert "token" not in response.json()


async def test_registration_cannot_set_superuser(client: Client) -> None:
    response = await client.post(
        "/user", json_body={"name": "eve", "pwd": PASSWORD, "is_superuser": True}
    )
    assert response.status == 422
    assert response.json()["errors"][0]["field"] == "is_superuser"


@pytest.mark.parametrize(
    ("pwd", "reason"),
    [
        ("short", "at least 8"),
        ("x" * 129, "at most 128"),
        ("password123", "most common"),
        ("Iloveyou1", "most common"),
        ("cxkcxkcxk", "account name"),
    ],
)
async def test_weak_passwords_are_refused_with_the_rule(
    client: Client, pwd: str, reason: str
) -> None:
    name = "cxkcxkcxk" if "account name" in reason else "cxk"
    response = await client.post(
        "/user", json_body={"name": name, "pwd": pwd}, headers={"Accept-Language": "en"}
    )
    assert response.status == 422
    body = response.json()
    assert body["code"] == "weak_password"
    assert body["msg"] == "the password does not meet the policy"
    assert any(reason in item["reason"] for item in body["errors"])


async def test_a_weak_password_is_explained_in_chinese_by_default(client: Client) -> None:
    response = await client.post("/user", json_body={"name": "cxk", "pwd": "password123"})
    assert response.status == 422
    body = response.json()
    assert (body["code"], body["msg"]) == ("weak_password", "密码不符合要求")
    assert body["errors"] == [{"field": "pwd", "reason": "是最常见的密码之一，请换一个"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "pwd": PASSWORD}, "name"),
        ({"name": "n" * 33, "pwd": PASSWORD}, "name"),
        ({"name": "tab\there", "pwd": PASSWORD}, "name"),
        ({"name": " padded", "pwd": PASSWORD}, "name"),
        ({"name": "ok", "pwd": PASSWORD, "mobile": "12345"}, "mobile"),
        ({"name": "ok", "pwd": PASSWORD, "mobile": "+0123456789"}, "mobile"),
        ({"name": "ok", "pwd": PASSWORD, "city": "c" * 65}, "city"),
        ({"pwd": PASSWORD}, "name"),
        ({"name": "ok"}, "pwd"),
        ({"name": 5, "pwd": PASSWORD}, "name"),
    ],
)
async def test_invalid_registrations_are_422_naming_the_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/user", json_body=body)
    assert response.status == 422
    assert field in [item["field"] for item in response.json()["errors"]]


async def test_an_e164_mobile_number_is_accepted(client: Client) -> None:
    response = await register(client, mobile="+4915112345678")
    assert response.json()["user"]["mobile"] == "+4915112345678"


@pytest.mark.parametrize(
    "mobile",
    [
        "13٨١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "１３８１２３４５６７８",  # fullwidth digits
        "13812345678\n",
        "+4915112345678\n",
        "+٤٩١٥١١٢٣٤٥٦٧٨",
    ],
)
async def test_a_mobile_number_is_ascii_digits_only_without_a_trailing_newline(
    client: Client, mobile: str
) -> None:
    response = await client.post(
        "/user", json_body={"name": "ok", "pwd": PASSWORD, "mobile": mobile}
    )
    assert response.status == 422, response.text
    assert [item["field"] for item in response.json()["errors"]] == ["mobile"]
    await register(client)
    token = await login(client)
    change = await client.request(
        "PUT", "/user", json_body={"mobile": mobile}, headers=bearer(token)
    )
    assert change.status == 422, change.text
    assert [item["field"] for item in change.json()["errors"]] == ["mobile"]


@pytest.mark.parametrize("mobile", ["13812345678", "19900000000", "+4915112345678", "+1234567"])
async def test_ascii_mobile_numbers_are_accepted(client: Client, mobile: str) -> None:
    response = await register(client, mobile=mobile)
    assert response.json()["user"]["mobile"] == mobile


async def test_a_body_nested_50000_deep_is_400_on_every_user_route(client: Client) -> None:
    await register(client)
    token = await login(client)
    deep = "[" * 50_000
    headers = {**bearer(token), "Content-Type": "application/json"}
    for method, path in [
        ("GET", "/user"),
        ("POST", "/user"),
        ("PUT", "/user"),
        ("POST", "/user/login"),
        ("PUT", "/user/password"),
        ("DELETE", "/user/account"),
    ]:
        response = await client.request(method, path, body=deep, headers=headers)
        assert response.status == 400, f"{method} {path}: {response.text}"
        assert response.json()["code"] == "json_too_deep", f"{method} {path}"


async def test_a_body_nested_exactly_to_the_limit_is_parsed_then_validated(client: Client) -> None:
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    as_value = await client.post(
        "/user",
        body='{"name": "ok", "pwd": "'
        + PASSWORD
        + '", "city": '
        + "[" * (MAX_JSON_DEPTH - 1)
        + "]" * (MAX_JSON_DEPTH - 1)
        + "}",
        headers={"Content-Type": "application/json"},
    )
    assert as_value.status == 422, as_value.text
    assert [item["field"] for item in as_value.json()["errors"]] == ["city"]
    as_body = await client.post("/user", body=deep, headers={"Content-Type": "application/json"})
    assert as_body.status == 422
    assert as_body.json()["code"] == "validation_error"


async def test_a_form_body_is_415(client: Client) -> None:
    response = await client.post(
        "/user", body="name=x&pwd=y", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 415


async def test_malformed_json_is_400(client: Client) -> None:
    response = await client.post("/user", body="{", headers={"Content-Type": "application/json"})
    assert response.status == 400


async def test_a_body_over_64_kib_is_413(client: Client) -> None:
    response = await client.post("/user", json_body={"name": "x", "pwd": "p" * (65 * 1024)})
    assert response.status == 413


# -- authentication -------------------------------------------------------------------------


async def test_me_without_a_token_is_401_with_a_challenge(client: Client) -> None:
    response = await client.get("/user/me")
    assert response.status == 401
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Bearer nonsense-token"])
async def test_a_bad_authorization_header_is_401(client: Client, header: str) -> None:
    response = await client.get("/user/me", headers={"Authorization": header})
    assert response.status == 401
    assert response.json()["code"] == "invalid_token"


async def test_an_absolutely_expired_token_is_refused(client: Client, services: Services) -> None:
    await register(client)
    token = await login(client)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with services.sessions() as session, session.begin():
        await session.execute(update(AuthToken).values(expires_at=past))
    response = await client.get("/user/me", headers=bearer(token))
    assert response.status == 401
    assert response.json()["code"] == "token_expired"


async def test_an_idle_token_is_refused(client: Client, services: Services) -> None:
    await register(client)
    token = await login(client)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    async with services.sessions() as session, session.begin():
        await session.execute(update(AuthToken).values(last_used_at=long_ago))
    response = await client.get("/user/me", headers=bearer(token))
    assert response.status == 401
    assert response.json()["code"] == "token_expired"


async def test_last_used_is_not_written_on_every_request(
    client: Client, services: Services
) -> None:
    await register(client)
    token = await login(client)
    async with services.sessions() as session:
        before = await session.scalar(select(AuthToken.last_used_at))
    for _ in range(3):
        assert (await client.get("/user/me", headers=bearer(token))).status == 200
    async with services.sessions() as session:
        after = await session.scalar(select(AuthToken.last_used_at))
    assert after == before


# -- profile and password -------------------------------------------------------------------


async def test_put_user_changes_the_profile_and_me_shows_it_at_once(client: Client) -> None:
    await register(client)
    token = await login(client)
    assert (await client.get("/user/me", headers=bearer(token))).json()["user"]["city"] is None
    response = await client.request(
        "PUT", "/user", json_body={"city": "西安", "mobile": "13900000000"}, headers=bearer(token)
    )
    assert response.status == 200
    assert response.json()["user"]["city"] == "西安"
    me = await client.get("/user/me", headers=bearer(token))
    assert me.json()["user"]["city"] == "西安"
    assert me.json()["user"]["mobile"] == "13900000000"


async def test_renaming_to_a_taken_name_is_409(client: Client) -> None:
    await register(client, "alice")
    await register(client, "bob")
    token = await login(client, "bob")
    response = await client.request(
        "PUT", "/user", json_body={"name": "alice"}, headers=bearer(token)
    )
    assert response.status == 409


@pytest.mark.parametrize("body", [{}, {"name": None}, {"is_superuser": True}, [1]])
async def test_invalid_profile_changes_are_422(client: Client, body: Any) -> None:
    await register(client)
    token = await login(client)
    response = await client.request("PUT", "/user", json_body=body, headers=bearer(token))
    assert response.status == 422


async def test_put_user_without_a_token_is_401(client: Client) -> None:
    response = await client.request("PUT", "/user", json_body={"city": "x"})
    assert response.status == 401


@pytest.mark.parametrize("path", ["/user", "/user/password"])
async def test_a_password_change_revokes_every_other_session(client: Client, path: str) -> None:
    await register(client)
    current = await login(client)
    other = await login(client)
    response = await client.request(
        "PUT",
        path,
        json_body={"old_pwd": PASSWORD, "new_pwd": NEW_PASSWORD},
        headers=bearer(current),
    )
    assert response.status == 200, response.text
    assert (await client.get("/user/me", headers=bearer(other))).status == 401
    assert (await client.get("/user/me", headers=bearer(current))).status == 200
    old = await client.post("/user/login", json_body={"name": "cxk", "pwd": PASSWORD})
    assert old.status == 401
    await login(client, pwd=NEW_PASSWORD)


async def test_a_wrong_old_password_is_403_and_changes_nothing(client: Client) -> None:
    await register(client)
    token = await login(client)
    response = await client.request(
        "PUT",
        "/user/password",
        json_body={"old_pwd": "not it at all", "new_pwd": NEW_PASSWORD},
        headers=bearer(token),
    )
    assert response.status == 403
    assert response.json()["errors"][0]["field"] == "old_pwd"
    await login(client)


@pytest.mark.parametrize(("new", "reason"), [(PASSWORD, "differ"), ("qwertyuiop", "common")])
async def test_a_new_password_must_pass_the_policy(client: Client, new: str, reason: str) -> None:
    await register(client)
    token = await login(client)
    response = await client.request(
        "PUT",
        "/user/password",
        json_body={"old_pwd": PASSWORD, "new_pwd": new},
        headers={**bearer(token), "Accept-Language": "en"},
    )
    assert response.status == 422
    assert response.json()["errors"][0]["field"] == "new_pwd"
    assert reason in response.json()["errors"][0]["reason"]


# -- logout, account, sessions --------------------------------------------------------------


async def test_logout_revokes_the_token_at_once(client: Client) -> None:
    await register(client)
    token = await login(client)
    assert (await client.get("/user/me", headers=bearer(token))).status == 200
    response = await client.request("DELETE", "/user", headers=bearer(token))
    assert response.json() == {"msg": "success"}
    after = await client.get("/user/me", headers=bearer(token))
    assert after.status == 401
    assert after.json()["code"] == "token_expired"


async def test_closing_the_account_deactivates_it_and_keeps_the_data(
    client: Client, services: Services
) -> None:
    await register(client)
    token = await login(client)
    wrong = await client.request(
        "DELETE", "/user/account", json_body={"pwd": "not the password"}, headers=bearer(token)
    )
    assert wrong.status == 403
    response = await client.request(
        "DELETE", "/user/account", json_body={"pwd": PASSWORD}, headers=bearer(token)
    )
    assert response.status == 200
    assert (await client.get("/user/me", headers=bearer(token))).status == 401
    refused = await client.post("/user/login", json_body={"name": "cxk", "pwd": PASSWORD})
    assert refused.status == 401
    async with services.sessions() as session:
        user = await UserRepository(session).get_by_name("cxk")
        assert user is not None and user.is_active is False
        actions = [entry.action for entry in await AuditRepository(session).list()]
    assert "account_closed" in actions


async def test_the_last_superuser_cannot_close_their_account(
    client: Client, services: Services
) -> None:
    await register(client, "root")
    await make_superuser(services, "root")
    token = await login(client, "root")
    response = await client.request(
        "DELETE", "/user/account", json_body={"pwd": PASSWORD}, headers=bearer(token)
    )
    assert response.status == 409
    assert response.json()["code"] == "last_superuser"
    assert (await client.get("/user/me", headers=bearer(token))).status == 200


async def test_sessions_lists_live_logins_and_one_can_be_revoked(client: Client) -> None:
    await register(client)
    phone = await login(client, mobile_type=1)
    laptop = await login(client, mobile_type=3)
    listing = await client.get("/user/sessions", headers=bearer(laptop))
    assert listing.status == 200
    items = listing.json()["items"]
    assert [(item["device"], item["current"]) for item in items] == [
        ("android", False),
        ("pc", True),
    ]
    phone_id = items[0]["id"]
    revoked = await client.request("DELETE", f"/user/sessions/{phone_id}", headers=bearer(laptop))
    assert revoked.status == 200
    assert (await client.get("/user/me", headers=bearer(phone))).status == 401
    again = await client.request("DELETE", f"/user/sessions/{phone_id}", headers=bearer(laptop))
    assert again.status == 404
    assert listing.json()["count"] == 2
    assert (await client.get("/user/sessions", headers=bearer(laptop))).json()["count"] == 1


async def test_another_users_session_is_404(client: Client) -> None:
    await register(client, "alice")
    await register(client, "bob")
    alice = await login(client, "alice")
    bob = await login(client, "bob")
    bobs = (await client.get("/user/sessions", headers=bearer(bob))).json()["items"][0]["id"]
    response = await client.request("DELETE", f"/user/sessions/{bobs}", headers=bearer(alice))
    assert response.status == 404
    assert (await client.get("/user/me", headers=bearer(bob))).status == 200


# -- CORS and XSRF --------------------------------------------------------------------------


async def test_the_preflight_allows_the_seed_pages(client: Client) -> None:
    response = await client.request(
        "OPTIONS",
        "/user",
        headers={
            "Origin": "http://localhost:9000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {
        "GET",
        "POST",
        "PUT",
        "DELETE",
    }
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_errors_carry_cors_headers_too(client: Client) -> None:
    response = await client.get("/user/me", headers={"Origin": "http://localhost:9000"})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_requests_with_a_session_cookie_must_pass_xsrf(client: Client) -> None:
    response = await client.post(
        "/user",
        json_body={"name": "cxk", "pwd": PASSWORD},
        headers={"Cookie": "mservices_session=forged"},
    )
    assert response.status == 403
    assert response.json()["code"] == "forbidden"

"""The audit log reader: ``GET /api/audit`` and the ``/admin/audit`` page, behind ``audit.view``."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlencode

import pytest

from repositories.models import AuditEntry
from server.services import Services
from tests.conftest import Client
from tests.grants import grant
from tests.server.handlers.test_admin_pages import Browser
from tests.server.handlers.test_user import PASSWORD, bearer, login, register

DAY = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


async def auditor(client: Client, services: Services, name: str = "auditor") -> dict[str, str]:
    """A user holding ``audit.view``: their bearer header."""
    await register(client, name)
    await grant(services, name, "audit.view")
    return bearer(await login(client, name))


async def auditor_browser(client: Client, services: Services) -> Browser:
    """A browser logged in as a user holding ``audit.view``."""
    await register(client, "auditor")
    await grant(services, "auditor", "audit.view")
    browser = Browser(client)
    await browser.login("auditor", PASSWORD)
    return browser


async def add_entries(services: Services, *rows: dict[str, object]) -> list[int]:
    """Audit entries with the given columns (created_at defaults to DAY); their ids."""
    async with services.sessions() as session, session.begin():
        entries = [AuditEntry(**{"action": "probe", "created_at": DAY, **row}) for row in rows]
        session.add_all(entries)
        await session.flush()
        return [entry.id for entry in entries]


async def audit_ids(client: Client, headers: dict[str, str], **params: object) -> list[int]:
    response = await client.get(f"/api/audit?{urlencode(params)}", headers=headers)
    assert response.status == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_the_audit_log_answers_entries_newest_first_with_every_field(
    client: Client, services: Services
) -> None:
    headers = await auditor(client, services)
    [entry_id] = await add_entries(
        services,
        {
            "action": "role_permissions",
            "actor": "root",
            "detail": "role 3: +users.view",
            "client_ip": "192.0.2.9",
            "created_at": DAY + dt.timedelta(hours=8, microseconds=5),
        },
    )
    response = await client.get("/api/audit?limit=1", headers=headers)
    assert response.status == 200
    body = response.json()
    assert body["msg"] == "success"
    assert body["items"] == [
        {
            "id": entry_id,
            "created_at": "2024-05-01T08:00:00.000005Z",
            "action": "role_permissions",
            "actor": "root",
            "user_id": None,
            "detail": "role 3: +users.view",
            "client_ip": "192.0.2.9",
        }
    ]
    assert body["next_before"] == entry_id  # the registration and login entries are older


async def test_registration_and_login_are_in_the_log_of_their_actor(
    client: Client, services: Services
) -> None:
    headers = await auditor(client, services)
    response = await client.get("/api/audit?actor=auditor", headers=headers)
    items = response.json()["items"]
    assert [item["action"] for item in items] == ["login", "register"]
    assert {item["client_ip"] for item in items} == {"127.0.0.1"}
    assert response.json()["next_before"] is None


async def test_actor_and_action_filters_match_exactly(client: Client, services: Services) -> None:
    headers = await auditor(client, services)
    ids = await add_entries(
        services,
        {"actor": "bob", "action": "login"},
        {"actor": "bobby", "action": "login"},
        {"actor": "bob", "action": "logout"},
    )
    assert await audit_ids(client, headers, actor="bob") == [ids[2], ids[0]]
    assert await audit_ids(client, headers, actor="bob", action="login") == [ids[0]]
    assert await audit_ids(client, headers, action="logout") == [ids[2]]
    assert await audit_ids(client, headers, actor="bo") == []


async def test_since_and_until_accept_dates_and_datetimes_in_utc(
    client: Client, services: Services
) -> None:
    headers = await auditor(client, services)
    before, morning, night, next_day = await add_entries(
        services,
        {"created_at": DAY - dt.timedelta(seconds=1)},
        {"created_at": DAY + dt.timedelta(hours=8)},
        {"created_at": DAY + dt.timedelta(hours=23, minutes=59)},
        {"created_at": DAY + dt.timedelta(days=1)},
    )
    probe = {"action": "probe"}
    # A date `until` covers that whole day.
    assert await audit_ids(client, headers, **probe, since="2024-05-01", until="2024-05-01") == [
        night,
        morning,
    ]
    assert await audit_ids(client, headers, **probe, since="2024-05-01T08:00:00Z") == [
        next_day,
        night,
        morning,
    ]
    # A naive datetime is UTC; `until` is exclusive.
    assert await audit_ids(client, headers, **probe, until="2024-05-01T08:00:00") == [before]
    # An offset is converted: 16:00 in Beijing is 08:00 UTC.
    assert await audit_ids(client, headers, **probe, since="2024-05-01T16:00:00+08:00") == [
        next_day,
        night,
        morning,
    ]


async def test_following_next_before_visits_every_entry_once_while_new_ones_arrive(
    client: Client, services: Services
) -> None:
    headers = await auditor(client, services)
    ids = await add_entries(services, *[{"actor": "pager"} for _ in range(23)])
    seen: list[int] = []
    params: dict[str, object] = {"actor": "pager", "limit": 5}
    pages = 0
    while True:
        response = await client.get(f"/api/audit?{urlencode(params)}", headers=headers)
        assert response.status == 200
        body = response.json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        # Newer entries written between pages never shift the pages still to come.
        await add_entries(services, {"actor": "pager"})
        if body["next_before"] is None:
            break
        params["before"] = body["next_before"]
    assert seen == ids[::-1]
    assert len(set(seen)) == len(seen)
    assert pages == 5


async def test_a_user_without_audit_view_is_refused_with_403(
    client: Client, services: Services
) -> None:
    await register(client, "mallory")
    await grant(services, "mallory", "users.view", "roles.view", "menus.view")
    headers = bearer(await login(client, "mallory"))
    response = await client.get("/api/audit", headers=headers)
    assert response.status == 403
    assert response.json()["code"] == "permission_required"
    browser = Browser(client)
    await browser.login("mallory", PASSWORD)
    page = await browser.get("/admin/audit")
    assert page.status == 403
    assert "audit.view" in page.text


async def test_a_visitor_is_asked_to_log_in(client: Client) -> None:
    response = await client.get("/api/audit")
    assert response.status == 401
    assert response.json()["code"] == "not_authenticated"
    page = await client.get("/admin/audit")
    assert page.status == 302
    assert page.headers["Location"] == "/login?next=%2Fadmin%2Faudit"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("before=0", "before"),
        ("before=-5", "before"),
        ("before=1e3", "before"),
        (f"before={2**63}", "before"),
        ("before=" + "9" * 5000, "before"),
        ("since=yesterday", "since"),
        ("since=2024-13-01", "since"),
        ("since=0999-12-31", "since"),
        ("since=0001-01-01T00:00:00%2B01:00", "since"),
        ("until=9999-12-31", "until"),
        ("until=2024-05-01T25:00", "until"),
        ("since=2024-05-02&until=2024-05-01", "until"),
        ("since=2024-05-01T08:00Z&until=2024-05-01T08:00Z", "until"),
        ("actor=" + "a" * 33, "actor"),
        ("action=" + "x" * 33, "action"),
        ("actor=a&actor=b", "actor"),
        ("limit=5&limit=6", "limit"),
    ],
)
async def test_a_bad_query_value_is_422_naming_the_parameter(
    client: Client, services: Services, query: str, field: str
) -> None:
    headers = await auditor(client, services)
    response = await client.get(f"/api/audit?{query}", headers=headers)
    assert response.status == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert [error["field"] for error in body["errors"]] == [field]


async def test_a_bad_query_values_reason_is_in_the_callers_language(
    client: Client, services: Services
) -> None:
    headers = await auditor(client, services)
    query = "/api/audit?since=2024-05-02&until=2024-05-01"

    async def reasons(**extra: str) -> list[dict[str, str]]:
        response = await client.get(query, headers={**headers, **extra})
        assert response.status == 422, response.text
        errors: list[dict[str, str]] = response.json()["errors"]
        return errors

    assert await reasons() == [{"field": "until", "reason": "必须晚于 since"}]
    assert await reasons(**{"Accept-Language": "en"}) == [
        {"field": "until", "reason": "must be later than since"}
    ]


async def test_blank_filters_mean_no_filter(client: Client, services: Services) -> None:
    headers = await auditor(client, services)
    everything = await audit_ids(client, headers)
    assert await audit_ids(client, headers, actor="", action="", since="", until="") == everything


async def test_the_page_shows_hostile_text_as_text(client: Client, services: Services) -> None:
    browser = await auditor_browser(client, services)
    await add_entries(
        services,
        {
            "action": "<svg onload=x>",
            "actor": "<script>evil()",
            "detail": '"><img src=x onerror=alert(1)>',
            "client_ip": "<b>ip</b>",
        },
    )
    page = await browser.get("/admin/audit?actor=%3Cscript%3Eevil()")
    assert page.status == 200
    assert "审计日志" in page.text
    assert "<script>evil()" not in page.text
    assert "&lt;script&gt;evil()" in page.text  # in the table and in the filter form
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<svg" not in page.text
    assert "<b>ip</b>" not in page.text


async def test_the_page_wraps_its_table_in_a_scrolling_box(
    client: Client, services: Services
) -> None:
    browser = await auditor_browser(client, services)
    page = await browser.get("/admin/audit")
    assert re.search(r'<div class="table-scroll">\s*<table class="audit">', page.text)
    assert ".table-scroll { overflow-x: auto;" in page.text


async def test_the_page_links_to_older_entries_keeping_the_filters(
    client: Client, services: Services
) -> None:
    browser = await auditor_browser(client, services)
    ids = await add_entries(services, *[{"actor": "pager"} for _ in range(3)])
    page = await browser.get("/admin/audit?actor=pager&limit=2")
    assert page.status == 200
    assert f'data-entry-id="{ids[2]}"' in page.text
    assert f'data-entry-id="{ids[0]}"' not in page.text
    older = f"/admin/audit?actor=pager&amp;limit=2&amp;before={ids[1]}"
    assert f'href="{older}" rel="next"' in page.text
    second = await browser.get(older.replace("&amp;", "&"))
    assert f'data-entry-id="{ids[0]}"' in second.text
    assert 'rel="next"' not in second.text
    assert 'href="/admin/audit?actor=pager&amp;limit=2">最新</a>' in second.text


async def test_the_page_names_a_bad_filter_and_answers_422(
    client: Client, services: Services
) -> None:
    browser = await auditor_browser(client, services)
    page = await browser.get("/admin/audit?since=%3Cb%3Esoon")
    assert page.status == 422
    assert "参数 <code>since</code> 无效" in page.text
    assert 'value="&lt;b&gt;soon"' in page.text  # what was typed is shown back, escaped
    assert "<table" not in page.text

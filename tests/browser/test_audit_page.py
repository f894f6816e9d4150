"""The audit log page on a 390 px wide phone: the table scrolls inside its box, the page does not.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (see ``tests/browser/conftest.py``).
"""

from __future__ import annotations

import datetime as dt

import pytest

from repositories.models import AuditEntry
from server.services import Services
from tests.browser.conftest import browser_unavailable
from tests.conftest import REQUIRE_SERVICES, Client
from tests.grants import grant

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, expect  # noqa: E402 - needs the check

PASSWORD = "correct horse battery"
PHONE = {"width": 390, "height": 844}


async def test_the_audit_table_scrolls_in_its_box_on_a_phone(
    browser: Browser, client: Client, services: Services
) -> None:
    response = await client.post("/user", json_body={"name": "auditor", "pwd": PASSWORD})
    assert response.status == 201
    await grant(services, "auditor", "audit.view")
    async with services.sessions() as session, session.begin():
        session.add(
            AuditEntry(
                action="admin_refused",
                actor="somebody_with_a_long_name_here",
                detail="grant_ceiling: " + "a-very-long-permission-list," * 8,
                client_ip="2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                created_at=dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
            )
        )
    context = await browser.new_context(base_url=client.base_url, viewport=PHONE, locale="zh-CN")
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_label("用户名").fill("auditor")
    await page.get_by_label("密码").fill(PASSWORD)
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_url(client.base_url + "/")
    await page.goto("/admin/audit")
    await expect(page.locator("h1")).to_have_text("审计日志")
    box = page.locator(".table-scroll")
    sizes = await box.evaluate(
        "box => ({scroll: box.scrollWidth, client: box.clientWidth,"
        " right: box.getBoundingClientRect().right})"
    )
    assert sizes["scroll"] > sizes["client"], "the wide table scrolls sideways inside its box"
    assert sizes["right"] <= PHONE["width"], "the box itself stays within the screen"
    await context.close()

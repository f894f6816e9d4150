"""Email verification and password recovery end to end: mail goes through a real SMTP server
(aiosmtpd, started here), the link is parsed out of the message and followed over HTTP."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from repositories.emails import UserEmailRepository
from repositories.models import AuditEntry, User
from repositories.users import UserRepository
from server.handlers.base import LANGUAGE_COOKIE
from server.principal import Principal
from server.recovery import InvalidLink, Recovery
from server.services import Services
from tests.conftest import Client, Response
from tests.mailbox import Mailbox, Site, link_in, serve_with_mail
from tests.server.handlers.test_admin_pages import Browser, Flash, flash_of

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
async def site(tmp_path: Path, sqlite_url: str, mailbox: Mailbox) -> AsyncIterator[Site]:
    async with serve_with_mail(tmp_path, sqlite_url, mailbox) as served:
        yield served


async def make_user(
    services: Services, name: str = "cxk", *, email: str | None = None, verified: bool = False
) -> int:
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).add(
            name=name, password_hash=await services.passwords.hash(PASSWORD), city="北京"
        )
        if email is not None:
            await UserEmailRepository(session).set_email(user, email)
            user.email_verified = verified
        return user.id


async def log_in(client: Client, name: str = "cxk", pwd: str = PASSWORD) -> str:
    response = await client.post("/user/login", json_body={"name": name, "pwd": pwd})
    assert response.status == 200, response.text
    return str(response.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def stored_user(services: Services, user_id: int) -> User:
    async with services.sessions() as session:
        return await UserRepository(session).get(user_id)


async def audit_count(services: Services, action: str) -> int:
    async with services.sessions() as session:
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        return int(await session.scalar(query) or 0)


def token_of(link: str) -> str:
    return urlsplit(link).path.rsplit("/", 1)[1]


async def forgot(client: Client, email: str, **kwargs: Any) -> Response:
    return await client.post("/user/password/forgot", json_body={"email": email}, **kwargs)


# -- email verification ------------------------------------------------------------------------


async def test_setting_an_email_mails_a_link_whose_page_verifies_it(site: Site) -> None:
    user_id = await make_user(site.services)
    token = await log_in(site.client)

    response = await site.client.request(
        "PUT",
        "/user/email",
        json_body={"email": " Cxk@Example.COM ", "pwd": PASSWORD},
        headers=bearer(token),
    )

    assert response.status == 200, response.text
    assert response.json() == {
        "msg": "success",
        "email": "cxk@example.com",
        "email_verified": False,
    }
    message = await site.mailbox.wait_for(1)
    assert message["To"] == "cxk@example.com"
    assert message["From"] == "mservices <noreply@example.com>"
    link = link_in(message)
    assert link.startswith(f"{site.base_url}/verify/")
    browser = Browser(site.client)
    path = urlsplit(link).path
    page = await browser.get(path)
    assert page.status == 200 and "确认这是我的邮箱" in page.text
    assert not (await stored_user(site.services, user_id)).email_verified  # a GET uses nothing

    done = await browser.post(path)

    assert done.status == 200, done.text
    assert "cxk@example.com 已验证" in done.text
    assert (await stored_user(site.services, user_id)).email_verified
    again = await browser.post(path)
    assert again.status == 400 and "已被使用" in again.text
    me = (await site.client.get("/user/me", headers=bearer(token))).json()["user"]
    assert (me["email"], me["email_verified"]) == ("cxk@example.com", True)


async def test_the_json_api_verifies_an_address_with_the_links_token(site: Site) -> None:
    user_id = await make_user(site.services)
    token = await log_in(site.client)
    await site.client.request(
        "PUT",
        "/user/email",
        json_body={"email": "cxk@example.com", "pwd": PASSWORD},
        headers=bearer(token),
    )
    link_token = token_of(link_in(await site.mailbox.wait_for(1)))

    response = await site.client.post("/user/email/verify", json_body={"token": link_token})

    assert response.status == 200, response.text
    assert response.json()["email_verified"] is True
    assert (await stored_user(site.services, user_id)).email_verified
    reused = await site.client.post("/user/email/verify", json_body={"token": link_token})
    assert reused.status == 400 and reused.json()["code"] == "invalid_link"


async def test_changing_the_address_clears_the_flag_and_the_old_link_confirms_nothing(
    site: Site,
) -> None:
    user_id = await make_user(site.services, email="old@example.com", verified=True)
    token = await log_in(site.client)
    verification = await site.client.post("/user/email/verification", headers=bearer(token))
    assert verification.status == 409  # already verified: nothing sent
    await site.client.request(
        "PUT",
        "/user/email",
        json_body={"email": "first@example.com", "pwd": PASSWORD},
        headers=bearer(token),
    )
    first_link = token_of(link_in(await site.mailbox.wait_for(1)))

    changed = await site.client.request(
        "PUT",
        "/user/email",
        json_body={"email": "second@example.com", "pwd": PASSWORD},
        headers=bearer(token),
    )

    assert changed.json()["email_verified"] is False
    stale = await site.client.post("/user/email/verify", json_body={"token": first_link})
    assert stale.status == 400
    second = await site.mailbox.wait_for(2)
    assert second["To"] == "second@example.com"
    ok = await site.client.post(
        "/user/email/verify", json_body={"token": token_of(link_in(second))}
    )
    assert ok.status == 200
    user = await stored_user(site.services, user_id)
    assert (user.email, user.email_verified) == ("second@example.com", True)


async def test_an_address_held_by_another_account_is_a_conflict(site: Site) -> None:
    await make_user(site.services, "other", email="taken@example.com")
    await make_user(site.services)
    token = await log_in(site.client)

    response = await site.client.request(
        "PUT",
        "/user/email",
        json_body={"email": "TAKEN@example.com", "pwd": PASSWORD},
        headers=bearer(token),
    )

    assert response.status == 409 and response.json()["code"] == "email_taken"


async def test_setting_an_email_needs_a_login(site: Site) -> None:
    response = await site.client.request(
        "PUT", "/user/email", json_body={"email": "a@b.cn", "pwd": PASSWORD}
    )

    assert response.status == 401


# -- password reset ------------------------------------------------------------------------------


async def test_a_reset_by_mail_ends_every_session_and_the_new_password_logs_in(
    site: Site,
) -> None:
    await make_user(site.services, email="cxk@example.com", verified=True)
    old_tokens = [await log_in(site.client), await log_in(site.client)]
    for old in old_tokens:
        assert (await site.client.get("/user/me", headers=bearer(old))).status == 200

    asked = await forgot(site.client, "CXK@example.com")
    assert asked.status == 202
    message = await site.mailbox.wait_for(1)
    assert message["To"] == "cxk@example.com"
    link = link_in(message)
    assert link.startswith(f"{site.base_url}/reset/")

    reset = await site.client.post(
        "/user/password/reset", json_body={"token": token_of(link), "new_pwd": NEW_PASSWORD}
    )

    assert reset.status == 200, reset.text
    for old in old_tokens:
        assert (await site.client.get("/user/me", headers=bearer(old))).status == 401
    refused = await site.client.post("/user/login", json_body={"name": "cxk", "pwd": PASSWORD})
    assert refused.status == 401
    await log_in(site.client, pwd=NEW_PASSWORD)
    again = await site.client.post(
        "/user/password/reset", json_body={"token": token_of(link), "new_pwd": "yet another one!"}
    )
    assert again.status == 400 and again.json()["code"] == "invalid_link"


async def test_the_reset_pages_set_a_new_password_and_refuse_a_used_link(site: Site) -> None:
    await make_user(site.services, email="cxk@example.com", verified=True)
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)
    asked = await browser.post("/forgot", {"email": "cxk@example.com"})
    assert asked.status == 200 and "重置密码的链接已发送" in asked.text
    path = urlsplit(link_in(await site.mailbox.wait_for(1))).path
    form = await browser.get(path)
    assert form.status == 200 and form.headers["Referrer-Policy"] == "no-referrer"

    mismatch = await browser.post(path, {"new_pwd": NEW_PASSWORD, "new_pwd2": "something else"})
    assert mismatch.status == 422 and "不一致" in mismatch.text
    done = await browser.post(path, {"new_pwd": NEW_PASSWORD, "new_pwd2": NEW_PASSWORD})

    assert done.status == 302 and done.headers["Location"] == "/login"
    assert (await browser.get("/account")).status == 302  # this browser's session ended too
    used = await browser.get(path)
    assert used.status == 400 and "已被使用" in used.text
    await browser.login("cxk", NEW_PASSWORD)


async def test_a_weak_new_password_is_refused_and_the_link_stays_usable(site: Site) -> None:
    await make_user(site.services, email="cxk@example.com", verified=True)
    await forgot(site.client, "cxk@example.com")
    link_token = token_of(link_in(await site.mailbox.wait_for(1)))

    weak = await site.client.post(
        "/user/password/reset", json_body={"token": link_token, "new_pwd": "cxk"}
    )

    assert weak.status == 422 and weak.json()["code"] == "weak_password"
    assert {item["field"] for item in weak.json()["errors"]} == {"new_pwd"}
    ok = await site.client.post(
        "/user/password/reset", json_body={"token": link_token, "new_pwd": NEW_PASSWORD}
    )
    assert ok.status == 200


async def test_an_expired_link_is_refused(site: Site) -> None:
    user_id = await make_user(site.services, email="cxk@example.com", verified=True)
    asked_at = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)

    def at(moment: dt.datetime) -> Recovery:
        return Recovery(session, site.services, client_ip="192.0.2.1", clock=lambda: moment)

    async with site.services.sessions() as session, session.begin():
        recovery = at(asked_at)
        await recovery.request_password_reset("cxk@example.com")
        link_token = token_of(recovery.outbox[0].link)
    async with site.services.sessions() as session, session.begin():
        with pytest.raises(InvalidLink):
            await at(asked_at + dt.timedelta(hours=1)).reset_password(link_token, NEW_PASSWORD)
    async with site.services.sessions() as session, session.begin():
        user = await at(asked_at + dt.timedelta(minutes=59)).reset_password(
            link_token, NEW_PASSWORD
        )
        assert user.id == user_id


async def test_an_expired_verification_link_is_refused(site: Site) -> None:
    user_id = await make_user(site.services)
    sent_at = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
    async with site.services.sessions() as session, session.begin():
        recovery = Recovery(session, site.services, client_ip=None, clock=lambda: sent_at)
        user = await UserRepository(session).get(user_id)
        await UserEmailRepository(session).set_email(user, "cxk@example.com")
        await recovery.request_verification(principal_of(user))
        link_token = token_of(recovery.outbox[0].link)
    late = sent_at + dt.timedelta(hours=24)
    async with site.services.sessions() as session, session.begin():
        with pytest.raises(InvalidLink):
            await Recovery(session, site.services, client_ip=None, clock=lambda: late).verify_email(
                link_token
            )
    assert not (await stored_user(site.services, user_id)).email_verified


def principal_of(user: User) -> Principal:
    return Principal(user_id=user.id, name=user.name, is_superuser=False, role_ids=frozenset())


async def test_forgot_password_answers_identically_for_unknown_and_unverified_addresses(
    site: Site,
) -> None:
    await make_user(site.services, "known", email="known@example.com", verified=True)
    await make_user(site.services, "unverified", email="unverified@example.com")

    answers = [
        await forgot(site.client, address)
        for address in ("nobody@example.com", "unverified@example.com", "known@example.com")
    ]

    assert {(answer.status, answer.body) for answer in answers} == {(202, answers[0].body)}
    message = await site.mailbox.wait_for(1)
    assert message["To"] == "known@example.com"
    assert await audit_count(site.services, "password_reset_requested") == 1
    pages = [
        await Browser(site.client).post("/forgot", {"email": address})
        for address in ("nobody@example.com", "known@example.com")
    ]
    assert {page.status for page in pages} == {200}
    assert flash_free(pages[0].text) == flash_free(pages[1].text)


def flash_free(text: str) -> str:
    """A page without its XSRF token (which differs per browser)."""
    return re.sub(r'name="_xsrf" value="[^"]*"', "", text)


async def test_forgot_password_is_throttled_per_client_address(site: Site) -> None:
    for attempt in range(5):
        assert (await forgot(site.client, f"n{attempt}@example.com")).status == 202

    refused = await forgot(site.client, "n9@example.com")

    assert refused.status == 429
    assert refused.json()["code"] == "too_many_reset_requests"
    assert int(refused.headers["Retry-After"]) >= 1
    page = await Browser(site.client).post("/forgot", {"email": "n9@example.com"})
    assert page.status == 429 and "Retry-After" in page.headers


async def test_one_address_is_sent_at_most_its_allowance_of_links(site: Site) -> None:
    await make_user(site.services, email="cxk@example.com", verified=True)

    answers = [await forgot(site.client, "cxk@example.com") for _ in range(3)]

    assert [answer.status for answer in answers] == [202, 202, 202]
    assert await audit_count(site.services, "password_reset_requested") == 2
    await site.mailbox.wait_for(2)


async def test_links_point_at_the_public_url_whatever_the_host_header(site: Site) -> None:
    await make_user(site.services, email="cxk@example.com", verified=True)

    await forgot(site.client, "cxk@example.com", headers={"Host": "evil.example"})

    assert link_in(await site.mailbox.wait_for(1)).startswith(f"{site.base_url}/reset/")


# -- self-service pages --------------------------------------------------------------------------


async def test_signup_creates_the_account_and_logs_it_in(site: Site) -> None:
    browser = Browser(site.client)
    assert (await browser.get("/signup")).status == 200

    response = await browser.post(
        "/signup", {"name": "newbie", "pwd": PASSWORD, "pwd2": PASSWORD, "city": "上海"}
    )

    assert response.status == 302 and response.headers["Location"] == "/account"
    page = await browser.get("/account")
    assert page.status == 200 and "newbie" in page.text and "上海" in page.text
    taken = await Browser(site.client).post(
        "/signup", {"name": "newbie", "pwd": PASSWORD, "pwd2": PASSWORD}
    )
    assert taken.status == 409


async def test_the_account_page_changes_the_password_and_ends_other_sessions(
    site: Site,
) -> None:
    await make_user(site.services)
    api_token = await log_in(site.client)
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)

    wrong = await browser.act(
        "/account/password",
        {"old_pwd": "not it at all", "new_pwd": NEW_PASSWORD, "new_pwd2": NEW_PASSWORD},
    )
    assert wrong.level == "error" and "当前密码不正确" in wrong.text
    changed = await browser.act(
        "/account/password",
        {"old_pwd": PASSWORD, "new_pwd": NEW_PASSWORD, "new_pwd2": NEW_PASSWORD},
    )

    assert changed.level == "success"
    assert (await site.client.get("/user/me", headers=bearer(api_token))).status == 401
    assert (await browser.get("/account")).status == 200  # this session stays
    await log_in(site.client, pwd=NEW_PASSWORD)


async def test_the_account_page_ends_one_session(site: Site) -> None:
    await make_user(site.services)
    api_token = await log_in(site.client)
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)
    sessions = (await site.client.get("/user/sessions", headers=bearer(api_token))).json()
    api_session = next(item["id"] for item in sessions["items"] if item["current"])
    page = await browser.get("/account")
    assert f'data-session-id="{api_session}"' in page.text

    ended = await browser.act(f"/account/sessions/{api_session}/end")

    assert ended.text == "会话已结束"
    assert (await site.client.get("/user/me", headers=bearer(api_token))).status == 401
    assert f'data-session-id="{api_session}"' not in (await browser.get("/account")).text


async def test_changing_the_email_needs_the_current_password(site: Site) -> None:
    """A stolen session alone cannot point the account at its thief's mailbox."""
    user_id = await make_user(site.services)
    token = await log_in(site.client)
    response = await site.client.request(
        "PUT",
        "/user/email",
        json_body={"email": "thief@example.com", "pwd": "not the password"},
        headers=bearer(token),
    )
    assert response.status == 403
    assert response.json()["code"] == "wrong_password"
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)
    refused = await browser.act("/account/email", {"email": "thief@example.com", "pwd": "nope"})
    assert (refused.level, refused.text) == ("error", "当前密码不正确")
    assert (await stored_user(site.services, user_id)).email is None
    assert site.mailbox.messages == []


async def test_the_account_page_saves_the_profile_and_sends_a_verification_link(
    site: Site,
) -> None:
    user_id = await make_user(site.services)
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)

    saved = await browser.act("/account/profile", {"mobile": "13812345678", "city": "广州"})
    emailed = await browser.act("/account/email", {"email": "Cxk@Example.com", "pwd": PASSWORD})
    resent = await browser.act("/account/verification")

    assert saved.text == "资料已保存"
    assert emailed.text == "邮箱已保存，验证链接已发送到 cxk@example.com"
    assert resent.text == "验证链接已发送到 cxk@example.com"
    user = await stored_user(site.services, user_id)
    assert (user.mobile, user.city, user.email) == ("13812345678", "广州", "cxk@example.com")
    first, second = await site.mailbox.wait_for(1), await site.mailbox.wait_for(2)
    stale = await site.client.post(
        "/user/email/verify", json_body={"token": token_of(link_in(first))}
    )
    assert stale.status == 400  # the newer link retired it
    fresh = await site.client.post(
        "/user/email/verify", json_body={"token": token_of(link_in(second))}
    )
    assert fresh.status == 200
    assert "已验证" in (await browser.get("/account")).text


async def test_pages_show_hostile_text_escaped(site: Site) -> None:
    user_id = await make_user(site.services, HOSTILE)
    async with site.services.sessions() as session, session.begin():
        await UserRepository(session).update(user_id, {"city": HOSTILE})
    browser = Browser(site.client)
    await browser.login(HOSTILE, PASSWORD)

    account = await browser.get("/account")
    signup = await Browser(site.client).post(
        "/signup", {"name": HOSTILE, "pwd": PASSWORD, "pwd2": "different", "city": HOSTILE}
    )
    forgot_page = await Browser(site.client).post("/forgot", {"email": HOSTILE})

    for page in (account, signup, forgot_page):
        assert HOSTILE not in page.text
        assert ESCAPED in page.text or html.escape(HOSTILE, quote=True) in page.text


async def test_account_forms_without_the_xsrf_token_are_refused(site: Site) -> None:
    await make_user(site.services)
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)

    for path, fields in [
        ("/account/profile", {"city": "x"}),
        ("/forgot", {"email": "a@example.com"}),
        ("/signup", {"name": "n", "pwd": PASSWORD, "pwd2": PASSWORD}),
    ]:
        response = await browser.post(path, fields, xsrf=False)
        assert response.status == 403, path


async def test_the_account_page_needs_a_login(site: Site) -> None:
    response = await site.client.get("/account")

    assert response.status == 302
    assert response.headers["Location"] == "/login?next=%2Faccount"


async def test_the_login_page_links_to_signup_and_forgot(site: Site) -> None:
    page = await site.client.get("/login")

    assert 'href="/signup"' in page.text and 'href="/forgot"' in page.text


# -- languages: pages and mail -------------------------------------------------------------------


def in_english(browser: Browser) -> Browser:
    """``browser`` with English chosen through the header switch's cookie."""
    browser.cookies[LANGUAGE_COOKIE] = "en_US"
    return browser


async def choose_language(services: Services, user_id: int, language: str | None) -> None:
    async with services.sessions() as session, session.begin():
        await UserRepository(session).update(user_id, {"language": language})


async def test_a_reset_mail_is_chinese_by_default(site: Site) -> None:
    await make_user(site.services, email="cxk@example.com", verified=True)

    await forgot(site.client, "cxk@example.com")

    message = await site.mailbox.wait_for(1)
    assert message["Subject"] == "mservices 重置密码"
    assert message["Content-Language"] == "zh-CN"
    body = message.get_content()
    assert body.startswith("cxk，你好：")
    assert "1 小时内有效" in body and "Hello" not in body


async def test_a_reset_mail_is_in_the_language_of_the_request_when_the_account_has_none(
    site: Site,
) -> None:
    await make_user(site.services, email="cxk@example.com", verified=True)

    await forgot(site.client, "cxk@example.com", headers={"Accept-Language": "en-GB,en;q=0.9"})

    message = await site.mailbox.wait_for(1)
    assert message["Subject"] == "mservices: reset your password"
    assert message["Content-Language"] == "en-US"
    body = message.get_content()
    assert body.startswith("Hello cxk,")
    assert "it is valid for 1 hour and can be used once" in body
    assert link_in(message) in body
    assert not re.search(r"[\u4e00-\u9fff]", body)


async def test_a_reset_mail_is_in_the_accounts_language_whatever_the_request_asks(
    site: Site,
) -> None:
    user_id = await make_user(site.services, email="cxk@example.com", verified=True)
    await choose_language(site.services, user_id, "zh_CN")

    await forgot(site.client, "cxk@example.com", headers={"Accept-Language": "en"})

    assert (await site.mailbox.wait_for(1))["Subject"] == "mservices 重置密码"


async def test_a_verification_mail_follows_the_accounts_language(site: Site) -> None:
    user_id = await make_user(site.services)
    await choose_language(site.services, user_id, "en_US")
    token = await log_in(site.client)

    await site.client.request(
        "PUT",
        "/user/email",
        json_body={"email": "cxk@example.com", "pwd": PASSWORD},
        headers={**bearer(token), "Accept-Language": "zh-CN"},
    )

    message = await site.mailbox.wait_for(1)
    assert message["Subject"] == "mservices: verify your email address"
    body = message.get_content()
    assert "confirm that cxk@example.com is your email address" in body
    assert "valid for 24 hours" in body


async def test_the_forgot_answer_is_in_the_language_of_the_request(site: Site) -> None:
    chinese = await forgot(site.client, "nobody@example.com")
    english = await forgot(site.client, "nobody@example.com", headers={"Accept-Language": "en"})

    assert chinese.json() == {
        "msg": "accepted",
        "detail": "如果某个账号已验证过这个邮箱，重置链接正在发送中",
    }
    assert english.json() == {
        "msg": "accepted",
        "detail": "if an account has this verified address, a reset link is on its way",
    }


async def test_the_account_page_speaks_english_when_english_is_chosen(site: Site) -> None:
    await make_user(site.services)
    browser = in_english(Browser(site.client))
    await browser.login("cxk", PASSWORD)

    page = await browser.get("/account")

    assert page.status == 200
    assert '<html lang="en-US">' in page.text
    for sentence in ("My account", "Change password", "Login sessions", "End this session"):
        assert sentence in page.text
    chinese = set(re.findall(r"[\u4e00-\u9fff]+", page.text))
    # Chinese only in the language named in its own language, and the city as typed (data).
    assert chinese == {"中文", "北京"}


async def test_account_actions_answer_in_english_when_english_is_chosen(site: Site) -> None:
    await make_user(site.services)
    browser = in_english(Browser(site.client))
    await browser.login("cxk", PASSWORD)

    saved = await browser.act("/account/profile", {"city": "Xi'an"})
    weak = await browser.act(
        "/account/password", {"old_pwd": PASSWORD, "new_pwd": "cxk", "new_pwd2": "cxk"}
    )
    emailed = await browser.act("/account/email", {"email": "cxk@example.com", "pwd": PASSWORD})
    changed = await browser.act(
        "/account/password",
        {"old_pwd": PASSWORD, "new_pwd": NEW_PASSWORD, "new_pwd2": NEW_PASSWORD},
    )

    assert saved.text == "Profile saved"
    assert (weak.level, weak.text) == (
        "error",
        "The new password does not meet the requirements: must be at least 8 characters; "
        "must not be the account name",
    )
    assert emailed.text == "Email address saved; a verification link was sent to cxk@example.com"
    assert changed.text == "Password changed; 0 other sessions were ended"


async def test_a_weak_password_on_the_account_page_is_explained_in_chinese(site: Site) -> None:
    await make_user(site.services)
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)

    weak = await browser.act(
        "/account/password", {"old_pwd": PASSWORD, "new_pwd": "password123", "new_pwd2": "x"}
    )
    weaker = await browser.act(
        "/account/password",
        {"old_pwd": PASSWORD, "new_pwd": "password123", "new_pwd2": "password123"},
    )

    assert (weak.level, weak.text) == ("error", "两次输入的新密码不一致")
    assert (weaker.level, weaker.text) == (
        "error",
        "新密码不符合要求：是最常见的密码之一，请换一个",
    )


async def test_the_signup_forgot_and_reset_pages_speak_english_when_asked(site: Site) -> None:
    english = {"Accept-Language": "en"}
    signup = await site.client.get("/signup", headers=english)
    forgot_page = await site.client.get("/forgot", headers=english)
    reset = await site.client.get("/reset/" + "x" * 40, headers=english)
    login = await site.client.get("/login", headers=english)

    assert "Confirm the password" in signup.text and "City (optional)" in signup.text
    assert "Send a reset link" in forgot_page.text
    assert reset.status == 400
    assert "This link is invalid, has expired or has already been used." in reset.text
    assert "Forgot your password?" in login.text
    for page in (signup, forgot_page, reset, login):
        assert set(re.findall(r"[\u4e00-\u9fff]+", page.text)) == {"中文"}


async def test_an_invalid_address_on_the_forgot_page_says_why_in_the_readers_language(
    site: Site,
) -> None:
    chinese = await Browser(site.client).post("/forgot", {"email": "plain"})
    english = await in_english(Browser(site.client)).post("/forgot", {"email": "plain"})

    assert chinese.status == english.status == 422
    assert "邮箱无效：必须是邮箱地址，例如 name@example.com" in chinese.text
    assert (
        "The email address is not valid: must be an email address such as name@example.com"
        in english.text
    )


async def test_ending_this_session_is_confirmed_in_the_browsers_language(site: Site) -> None:
    user_id = await make_user(site.services)
    await choose_language(site.services, user_id, "en_US")
    browser = Browser(site.client)
    await browser.login("cxk", PASSWORD)
    page = await browser.get("/account")
    assert '<html lang="en-US">' in page.text
    [current] = re.findall(r'<tr data-session-id="(\d+)">', page.text)

    response = await browser.post(f"/account/sessions/{current}/end")

    assert response.status == 302 and response.headers["Location"] == "/login"
    login_page = await browser.get("/login")
    assert '<html lang="zh-CN">' in login_page.text  # a visitor again, in a Chinese browser
    assert flash_of(login_page) == Flash("success", "会话已结束")

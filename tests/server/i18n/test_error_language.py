"""Errors in the reader's language: the JSON ``msg`` and field reasons are translated, the
``code`` stays the same English word for programs; error pages lead in the page's language."""

from __future__ import annotations

from tests.conftest import Client

ENGLISH = {"Accept-Language": "en-US,en;q=0.9"}


async def test_a_json_error_is_chinese_by_default_and_english_when_asked(client: Client) -> None:
    chinese = await client.get("/user/me")
    english = await client.get("/user/me", headers=ENGLISH)

    assert chinese.status == english.status == 401
    assert chinese.json()["code"] == english.json()["code"] == "not_authenticated"
    assert chinese.json()["msg"].startswith("请先登录")
    assert english.json()["msg"].startswith("log in first")


async def test_validation_reasons_are_translated_field_by_field(client: Client) -> None:
    body = {"name": "x", "pwd": "y", "unexpected": 1}

    chinese = (await client.post("/user/login", json_body=body)).json()
    english = (await client.post("/user/login", json_body=body, headers=ENGLISH)).json()

    assert chinese["code"] == english["code"] == "validation_error"
    assert chinese["msg"] == "请求无效" and english["msg"] == "the request is invalid"
    assert [item["field"] for item in chinese["errors"]] == [
        item["field"] for item in english["errors"]
    ]
    reasons = {item["field"]: item["reason"] for item in english["errors"]}
    assert reasons["unexpected"] == "this field is not part of the request"
    chinese_reasons = {item["field"]: item["reason"] for item in chinese["errors"]}
    assert chinese_reasons["unexpected"] == "此字段不属于该请求"


async def test_the_language_cookie_wins_over_accept_language(client: Client) -> None:
    response = await client.get("/user/me", headers={**ENGLISH, "Cookie": "mservices_lang=zh_CN"})
    assert response.json()["msg"].startswith("请先登录")


async def test_a_cookie_naming_an_unknown_language_is_ignored(client: Client) -> None:
    response = await client.get("/user/me", headers={**ENGLISH, "Cookie": "mservices_lang=xx_YY"})
    assert response.json()["msg"].startswith("log in first")


async def test_the_error_page_speaks_the_readers_language(client: Client) -> None:
    chinese = await client.get("/no-such-page")
    english = await client.get("/no-such-page", headers=ENGLISH)

    assert chinese.status == english.status == 404
    assert '<html lang="zh-CN">' in chinese.text and "找不到这个页面" in chinese.text
    assert '<html lang="en-US">' in english.text and "This page cannot be found" in english.text
    assert "找不到" not in english.text


async def test_a_mismatched_xsrf_token_is_explained_not_called_a_bare_refusal(
    client: Client,
) -> None:
    """Tornado words a stale token "XSRF cookie does not match POST argument": the reader is
    told what to do (reload), in their language, whichever of Tornado's wordings it was."""
    for body in (f"_xsrf={'bb' * 16}", ""):
        response = await client.post(
            "/logout",
            body=body,
            headers={
                **ENGLISH,
                "Cookie": f"_xsrf={'aa' * 16}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert response.status == 403
        assert "X-XSRFToken header is missing or wrong; reload the page" in response.text

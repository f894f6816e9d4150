"""BaseHandler: request ids, body parsing, one transaction per request, one error shape."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select
from tornado.web import Application, url

from repositories.errors import NotFound
from repositories.models import Role
from repositories.roles import RoleRepository
from schemas.common import RequestSchema, Schema
from schemas.text import Text
from server.app import STATIC_DIR, TEMPLATE_DIR
from server.handlers.base import (
    MAX_JSON_BODY,
    MAX_JSON_DEPTH,
    ApiHandler,
    FormError,
    PageHandler,
    json_depth_exceeds,
    validate_form,
)
from server.permissions import PUBLIC, requires
from server.services import Services
from server.ui_modules import UI_MODULES
from tests.conftest import Client, Response, serve_app


class ProbeCreate(RequestSchema):
    """A body for the probe."""

    name: str = Field(min_length=1, max_length=64)
    count: int = 0


class ProbeRead(Schema):
    """The probe's answer."""

    msg: str = "success"
    name: str


class CommitProbe(ApiHandler):
    """Creates a role from the body and answers 201."""

    async def post(self) -> None:
        body = self.parse(ProbeCreate)
        await RoleRepository(self.db).add(name=body.name)
        await self.respond(ProbeRead(name=body.name), status=201)


class FailAfterWriteProbe(ApiHandler):
    """Writes, then fails with a bug."""

    async def post(self) -> None:
        await RoleRepository(self.db).add(name="written-then-failed")
        raise RuntimeError("a bug after a write")


class ConflictAtCommitProbe(ApiHandler):
    """Adds a duplicate without flushing, so the database refuses it at commit time."""

    async def post(self) -> None:
        self.db.add(Role(name="late-extra"))
        self.db.add(Role(name="taken"))
        await self.respond(ProbeRead(name="taken"))


class DomainErrorProbe(ApiHandler):
    """Raises a repository error."""

    async def get(self) -> None:
        raise NotFound("role 42 does not exist", code="role_not_found")


class RedirectProbe(ApiHandler):
    """Writes and redirects: a redirect is a success, so the write must be kept."""

    async def post(self) -> None:
        await RoleRepository(self.db).add(name="kept-by-redirect")
        self.redirect("/elsewhere")


class BrokenPageProbe(PageHandler):
    """A page with a bug."""

    async def get(self) -> None:
        raise RuntimeError("<script>alert(1)</script> secret detail")


@pytest.fixture
async def probe(services: Services) -> AsyncIterator[Client]:
    deps: dict[str, Any] = {"services": services, "need": requires(PUBLIC)}
    app = Application(
        [
            url(r"/api/commit", CommitProbe, deps),
            url(r"/api/fail", FailAfterWriteProbe, deps),
            url(r"/api/conflict", ConflictAtCommitProbe, deps),
            url(r"/api/domain", DomainErrorProbe, deps),
            url(r"/api/redirect", RedirectProbe, deps),
            url(r"/page", BrokenPageProbe, deps),
        ],
        template_path=str(TEMPLATE_DIR),
        static_path=str(STATIC_DIR),
        static_url_prefix="/s/",
        ui_modules=UI_MODULES,
        cookie_secret=services.cookie_secret,
    )
    server, base_url = await serve_app(app)
    http = Client(base_url)
    try:
        yield http
    finally:
        http.close()
        server.stop()


async def role_names(services: Services) -> set[str]:
    async with services.sessions() as session:
        return set((await session.scalars(select(Role.name))).all())


async def test_a_successful_request_commits_its_changes(probe: Client, services: Services) -> None:
    response = await probe.post("/api/commit", json_body={"name": "editors"})
    assert response.status == 201
    assert response.json() == {"msg": "success", "name": "editors"}
    assert "editors" in await role_names(services)


async def test_a_request_that_fails_after_writing_is_rolled_back(
    probe: Client, services: Services
) -> None:
    response = await probe.post("/api/fail", body=b"")
    assert response.status == 500
    assert response.json() == {
        "msg": "服务器内部错误",
        "code": "internal_error",
        "errors": [],
    }
    assert "a bug after a write" not in response.text
    assert "written-then-failed" not in await role_names(services)


async def test_a_commit_the_database_refuses_is_answered_409_and_keeps_nothing(
    probe: Client, services: Services
) -> None:
    async with services.sessions() as session, session.begin():
        session.add(Role(name="taken"))
    response = await probe.post("/api/conflict", body=b"")
    assert response.status == 409
    assert response.json()["code"] == "conflict"
    assert await role_names(services) == {"taken"}


async def test_a_redirect_keeps_the_changes_made_before_it(
    probe: Client, services: Services
) -> None:
    response = await probe.post("/api/redirect", body=b"")
    assert response.status == 302
    assert response.headers["Location"] == "/elsewhere"
    assert "kept-by-redirect" in await role_names(services)


async def test_repository_errors_become_their_status_and_code(probe: Client) -> None:
    response = await probe.get("/api/domain")
    assert response.status == 404
    assert response.json() == {
        "msg": "role 42 does not exist",
        "code": "role_not_found",
        "errors": [],
    }


async def test_a_body_that_is_not_json_typed_is_415(probe: Client) -> None:
    response = await probe.post(
        "/api/commit", body=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 415
    assert response.json()["code"] == "unsupported_media_type"


async def test_malformed_json_is_400(probe: Client) -> None:
    response = await probe.post(
        "/api/commit", body=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert response.json()["code"] == "malformed_json"


async def test_invalid_utf8_json_is_400_not_a_crash(probe: Client) -> None:
    response = await probe.post(
        "/api/commit", body=b'{"name": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400


async def test_a_body_over_the_limit_is_413(probe: Client, services: Services) -> None:
    huge = '{"name": "' + "x" * MAX_JSON_BODY + '"}'
    response = await probe.post(
        "/api/commit", body=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert response.json()["code"] == "payload_too_large"
    assert await role_names(services) == set()


async def test_schema_errors_are_422_with_every_field(probe: Client) -> None:
    response = await probe.post("/api/commit", json_body={"name": "", "count": "many", "x": 1})
    assert response.status == 422
    body = response.json()
    assert body["code"] == "validation_error"
    fields = {item["field"] for item in body["errors"]}
    assert fields == {"name", "count", "x"}
    assert all(item["reason"] for item in body["errors"])


async def test_a_json_body_that_is_not_an_object_is_422(probe: Client) -> None:
    response = await probe.post("/api/commit", json_body=["name"])
    assert response.status == 422


PATH_VALUES = {"{download_id}": "0" * 32}
"""Path parameters that are not plain numbers; every other ``{..._id}`` becomes 1."""


def nested(depth: int) -> str:
    """Arrays nested ``depth`` levels deep."""
    return "[" * depth + "]" * depth


async def post_json(probe: Client, text: str | bytes) -> Response:
    """POST ``text`` as a JSON body to the probe; the response."""
    return await probe.post("/api/commit", body=text, headers={"Content-Type": "application/json"})


async def test_json_nested_50000_deep_is_400_json_too_deep_not_a_crash(probe: Client) -> None:
    response = await post_json(probe, "[" * 50_000)
    assert response.status == 400
    body = response.json()
    assert body["code"] == "json_too_deep"
    assert str(MAX_JSON_DEPTH) in body["msg"]


async def test_json_nested_exactly_to_the_limit_reaches_the_schema(probe: Client) -> None:
    at_limit = await post_json(probe, nested(MAX_JSON_DEPTH))
    assert at_limit.status == 422  # parsed, then refused by the schema: not an object
    assert at_limit.json()["code"] == "validation_error"
    one_more = await post_json(probe, nested(MAX_JSON_DEPTH + 1))
    assert one_more.status == 400
    assert one_more.json()["code"] == "json_too_deep"


async def test_objects_count_as_nesting_like_arrays(probe: Client) -> None:
    deep = '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)
    response = await post_json(probe, deep)
    assert response.status == 400
    assert response.json()["code"] == "json_too_deep"


async def test_brackets_inside_strings_do_not_count_as_nesting(
    probe: Client, services: Services
) -> None:
    name = "[" * 64  # 65 brackets with the object's own: more than the fast path lets through
    response = await probe.post("/api/commit", json_body={"name": name})
    assert response.status == 201, response.text
    assert await role_names(services) == {name}


async def test_a_utf16_body_cannot_smuggle_nesting_past_the_depth_check(probe: Client) -> None:
    # U+2241 is the bytes 0x41 0x22 in UTF-16-LE: a check reading bytes would see a quote there
    # and take the brackets that follow for text. The body is read as UTF-8, as the parser reads it.
    text = '["\u2241",' + nested(5_000) + "]"
    response = await post_json(probe, text.encode("utf-16-le"))
    assert response.status == 400
    assert response.json()["code"] == "malformed_json"


async def test_every_documented_json_body_refuses_deep_nesting_with_400(
    client: Client, demo: dict[str, str]
) -> None:
    login = await client.post("/user/login", json_body={"name": "admin", "pwd": demo["admin"]})
    assert login.status == 200, login.text
    headers = {
        "Authorization": f"Bearer {login.json()['token']}",
        "Content-Type": "application/json",
    }
    document = (await client.get("/openapi.json")).json()
    refused = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            url = re.sub(r"\{\w+_id\}", lambda match: PATH_VALUES.get(match[0], "1"), path)
            response = await client.request(method.upper(), url, body="[" * 50_000, headers=headers)
            assert response.status == 400, f"{method} {path}: {response.status} {response.text}"
            assert response.json()["code"] == "json_too_deep", f"{method} {path}"
            refused.append(f"{method} {path}")
    # The routes the issue names are among them (the seed's GET /user with a body too).
    named = {"post /user", "put /user", "get /user", "post /api/menus", "post /api/downloads"}
    assert named <= set(refused)


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        (nested(MAX_JSON_DEPTH), False),
        (nested(MAX_JSON_DEPTH + 1), True),
        ("[" * 50_000, True),
        ("[" + ",".join(["[]"] * 500) + "]", False),  # many siblings, two levels
        ('["' + "[" * 500 + '"]', False),  # brackets inside a string
        ('["\\"' + "[" * 500 + '"]', False),  # an escaped quote does not end the string
        ('["\\\\",' + nested(500) + "]", True),  # an escaped backslash does
        ('{"[": "{", "k": ' + nested(MAX_JSON_DEPTH - 1) + "}", False),
        ('{"k": ' + nested(MAX_JSON_DEPTH) + "}", True),
        ('["unterminated ' + "[" * 500, False),  # left for the parser to refuse
    ],
)
def test_json_depth_counts_only_brackets_outside_strings(text: str, too_deep: bool) -> None:
    assert json_depth_exceeds(text, MAX_JSON_DEPTH) is too_deep


async def test_a_page_bug_renders_the_html_error_page_without_details(probe: Client) -> None:
    response = await probe.get("/page")
    assert response.status == 500
    assert response.headers["Content-Type"].startswith("text/html")
    assert "500" in response.text
    assert "secret detail" not in response.text
    assert "<script>alert(1)</script>" not in response.text


async def test_every_response_carries_a_fresh_request_id(client: Client) -> None:
    first = await client.get("/healthz")
    second = await client.get("/nowhere")
    assert len(first.headers["X-Request-Id"]) == 32
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


async def test_a_sane_incoming_request_id_is_kept(client: Client) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "abc-123.trace"})
    assert response.headers["X-Request-Id"] == "abc-123.trace"


async def test_a_hostile_incoming_request_id_is_replaced(client: Client) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "x" * 65})
    assert response.headers["X-Request-Id"] != "x" * 65
    assert len(response.headers["X-Request-Id"]) == 32


async def test_an_unknown_api_route_is_a_json_404(client: Client) -> None:
    response = await client.get("/api/nothing-here")
    assert response.status == 404
    assert response.json() == {"msg": "找不到", "code": "not_found", "errors": []}


async def test_an_error_envelope_speaks_the_language_the_client_asks_for(client: Client) -> None:
    response = await client.get("/api/nothing-here", headers={"Accept-Language": "en-GB"})
    assert response.status == 404
    assert response.json() == {"msg": "not found", "code": "not_found", "errors": []}


async def test_an_unknown_page_is_an_html_404(client: Client) -> None:
    response = await client.get("/nothing-here", headers={"Accept": "text/html"})
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "404" in response.text


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "DELETE"])
async def test_an_unknown_route_is_a_404_whatever_the_method(client: Client, method: str) -> None:
    response = await client.request(method, "/api/nothing-here")
    assert response.status == 404
    assert response.json()["code"] == "not_found"


async def test_an_unknown_route_posted_without_xsrf_is_still_a_404(client: Client) -> None:
    response = await client.post("/api/nothing-here", json_body={})
    assert response.status == 404


async def test_each_request_logs_one_access_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="mservices.access"):
        response = await client.get("/healthz")
    lines = [record.getMessage() for record in caplog.records if record.name == "mservices.access"]
    assert len(lines) == 1
    assert lines[0].startswith("200 GET /healthz ")
    assert "ms rid=" + response.headers["X-Request-Id"] in lines[0]


class _Form(BaseModel):
    """A form with a field rule and a whole-form rule."""

    name: str = Field(min_length=2)
    again: str = ""

    @model_validator(mode="after")
    def same(self) -> _Form:
        """The whole form's rule."""
        if self.again and self.again != self.name:
            raise ValueError(Text("the two names differ"))
        return self


def test_validate_form_names_each_field_and_leaves_a_form_rule_unnamed() -> None:
    with pytest.raises(FormError) as field_error:
        validate_form(_Form, {"name": "x"})
    with pytest.raises(FormError) as form_error:
        validate_form(_Form, {"name": "xy", "again": "yz"})

    assert str(field_error.value.message) == (
        "The input is not valid (name: must be at least 2 characters)"
    )
    assert str(form_error.value.message) == "The input is not valid (the two names differ)"

"""``/openapi.json`` and ``/docs``: the API description generated from the route table."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from tornado.escape import xhtml_escape
from tornado.routing import PathMatches

from schemas.user import MOBILE_PATTERN, Mobile
from server.handlers.admin_api import MenuDeleteQuery, MenuListQuery, UserListQuery
from server.handlers.audit import AuditQuery
from server.handlers.base import MAX_JSON_BODY, MAX_JSON_DEPTH
from server.handlers.downloads import SeedDownloadQuery
from server.routes import build_routes
from server.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from server.services import Services
from tests.conftest import Client

USER_CONTRACT = [
    ("get", "/user"),
    ("post", "/user"),
    ("put", "/user"),
    ("delete", "/user"),
    ("post", "/user/login"),
    ("get", "/user/me"),
    ("put", "/user/password"),
    ("delete", "/user/account"),
    ("get", "/user/sessions"),
    ("delete", "/user/sessions/{session_id}"),
    ("get", "/healthz"),
]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
REGEX_SYNTAX = re.compile(r"[()\[\]\\^$?*+|]")
SCHEMA_REF = "#/components/schemas/"


@pytest.fixture
async def document(client: Client) -> dict[str, Any]:
    """The served OpenAPI document."""
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of the document."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` anywhere in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or the component it refers to."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    component: dict[str, Any] = document["components"]["schemas"][ref.removeprefix(SCHEMA_REF)]
    return component


async def test_the_document_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "mservices"
    assert document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }


async def test_every_route_with_operations_is_documented_with_each_method(
    document: dict[str, Any], services: Services
) -> None:
    documented = 0
    for rule in build_routes(services):
        declared = getattr(rule.target, "operations", None)
        if not declared:
            continue
        assert isinstance(rule.matcher, PathMatches)
        path = NAMED_GROUP.sub(r"{\1}", rule.matcher.regex.pattern).removesuffix("$")
        assert path in document["paths"], f"{path} is not documented"
        assert set(document["paths"][path]) == {method.lower() for method in declared}, path
        documented += len(declared)
    assert documented == len(list(operations(document)))


async def test_every_json_route_of_the_user_contract_is_documented(
    document: dict[str, Any],
) -> None:
    present = {(method, path) for method, path, _ in operations(document)}
    assert [pair for pair in USER_CONTRACT if pair not in present] == []


async def test_path_parameters_are_templated_and_declared(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert not REGEX_SYNTAX.search(path), f"{path} still holds regex syntax"
        names = re.findall(r"\{(\w+)\}", path)
        declared = {
            parameter["name"]: parameter
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "path"
        }
        assert sorted(declared) == sorted(names), f"{method} {path}"
        assert all(parameter["required"] is True for parameter in declared.values())
    session = document["paths"]["/user/sessions/{session_id}"]["delete"]["parameters"][0]
    assert session["schema"] == {"type": "integer", "minimum": 0}
    download = document["paths"]["/api/downloads/{download_id}"]["get"]["parameters"][0]
    assert download["schema"] == {"type": "string", "pattern": "^[0-9a-f]{32}$"}


async def test_every_ref_resolves_to_a_component_schema(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    found = list(refs(document))
    assert found
    for ref in found:
        assert ref.startswith(SCHEMA_REF), ref
        assert ref.removeprefix(SCHEMA_REF) in components, f"{ref} does not resolve"


async def test_request_bodies_forbid_extra_keys(document: dict[str, Any]) -> None:
    login = document["components"]["schemas"]["LoginRequest"]
    assert login["additionalProperties"] is False
    assert set(login["required"]) == {"name", "pwd"}
    for method, path, operation in operations(document):
        if "requestBody" not in operation:
            continue
        schema = resolve(
            document, operation["requestBody"]["content"]["application/json"]["schema"]
        )
        assert schema.get("additionalProperties") is False, f"{method} {path}"


async def test_every_operation_documents_its_answer_and_the_error_envelope(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        assert any(status.startswith("2") for status in responses), f"{method} {path}"
        assert "503" in responses, f"{method} {path}"
        if operation.get("security"):
            assert "401" in responses, f"{method} {path}"
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(responses), f"{method} {path}"
        for status, response in responses.items():
            schema = response["content"]["application/json"]["schema"]
            if not status.startswith("2"):
                assert schema == {"$ref": f"{SCHEMA_REF}ErrorEnvelope"}, f"{method} {path} {status}"


async def test_docs_lists_every_path_and_summary_escaped(
    client: Client, document: dict[str, Any]
) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    html = response.text
    for method, path, operation in operations(document):
        assert f"<code>{xhtml_escape(path)}</code>" in html, path
        assert xhtml_escape(operation["summary"]) in html, f"{method} {path}"
    # The token field's description holds "<token>": it must arrive as text, not as a tag.
    assert "Bearer <token>" not in html
    assert "Bearer &lt;token&gt;" in html


# -- every constraint the validation enforces is in the document ------------------------------

USER_FIELD_CONSTRAINTS: dict[tuple[str, str], dict[str, Any]] = {
    ("LoginRequest", "name"): {"minLength": 1, "maxLength": 32},
    ("LoginRequest", "pwd"): {"minLength": 1, "maxLength": 1024},
    ("LoginRequest", "mobile_type"): {"enum": [1, 2, 3]},
    ("RegisterRequest", "name"): {"minLength": 1, "maxLength": 32},
    ("RegisterRequest", "pwd"): {
        "minLength": MIN_PASSWORD_LENGTH,
        "maxLength": MAX_PASSWORD_LENGTH,
    },
    ("RegisterRequest", "mobile"): {"maxLength": 16, "pattern": MOBILE_PATTERN},
    ("RegisterRequest", "city"): {"minLength": 1, "maxLength": 64},
    ("ProfileUpdate", "name"): {"minLength": 1, "maxLength": 32},
    ("ProfileUpdate", "mobile"): {"maxLength": 16, "pattern": MOBILE_PATTERN},
    ("ProfileUpdate", "city"): {"minLength": 1, "maxLength": 64},
    ("PasswordChange", "old_pwd"): {"minLength": 1, "maxLength": 1024},
    ("PasswordChange", "new_pwd"): {
        "minLength": MIN_PASSWORD_LENGTH,
        "maxLength": MAX_PASSWORD_LENGTH,
    },
    ("AccountClose", "pwd"): {"minLength": 1, "maxLength": 1024},
}
"""What the validation of the user API enforces, field by field (the password policy's bounds
for a password being chosen, the enum of ``MobileType``)."""
CONSTRAINT_KEYS = ("minLength", "maxLength", "pattern", "enum")


def user_request_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The request body schemas of the ``/user`` operations, by component name."""
    found = {}
    for _, path, operation in operations(document):
        if not path.startswith("/user") or "requestBody" not in operation:
            continue
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.removeprefix(SCHEMA_REF)
        found[name] = document["components"]["schemas"][name]
    return found


def value_schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A property's schema without its ``null`` alternative, references resolved."""
    branches = [branch for branch in schema.get("anyOf", [schema]) if branch != {"type": "null"}]
    assert len(branches) == 1, schema
    return resolve(document, branches[0])


def constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """The validation keywords of a property schema."""
    return {key: schema[key] for key in CONSTRAINT_KEYS if key in schema}


async def test_every_user_request_field_documents_the_constraints_validation_enforces(
    document: dict[str, Any],
) -> None:
    schemas = user_request_schemas(document)
    assert set(schemas) >= {name for name, _ in USER_FIELD_CONSTRAINTS}
    checked = 0
    for name, schema in schemas.items():
        for field, property_schema in schema["properties"].items():
            documented = value_schema(document, property_schema)
            expected = USER_FIELD_CONSTRAINTS.get((name, field))
            if expected is not None:
                assert constraints(documented) == expected, f"{name}.{field}"
                checked += 1
            if documented.get("type") == "string":
                bounded = {"maxLength", "pattern", "enum"} & set(documented)
                assert bounded, f"{name}.{field} is a string the document does not bound"
    assert checked == len(USER_FIELD_CONSTRAINTS)


async def test_rules_without_a_keyword_are_stated_in_the_description(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    for model in ("LoginRequest", "RegisterRequest", "ProfileUpdate"):
        name = value_schema(document, schemas[model]["properties"]["name"])
        assert "printable" in name["description"], model
    for model, field in (("RegisterRequest", "pwd"), ("PasswordChange", "new_pwd")):
        password = schemas[model]["properties"][field]
        assert "common password" in password["description"], model
    assert schemas["ProfileUpdate"]["minProperties"] == 1


@pytest.mark.parametrize(
    ("mobile", "valid"),
    [
        ("13812345678", True),
        ("+4915112345678", True),
        ("12345678901", False),
        ("+0123456789", False),
        ("13٨١٢٣٤٥٦٧٨", False),
        ("１３８１２３４５６７８", False),
        ("13812345678\n", False),
        ("\n13812345678", False),
    ],
)
async def test_the_documented_mobile_pattern_agrees_with_the_validation(
    document: dict[str, Any], mobile: str, valid: bool
) -> None:
    schema = document["components"]["schemas"]["RegisterRequest"]["properties"]["mobile"]
    pattern: str = value_schema(document, schema)["pattern"]
    # JSON Schema patterns are ECMA-262: without the m flag, ^ and $ anchor the whole input.
    assert pattern.startswith("^") and pattern.endswith("$")
    documented = re.fullmatch(pattern[1:-1], mobile) is not None
    try:
        TypeAdapter(Mobile).validate_python(mobile)
        validated = True
    except ValidationError:
        validated = False
    assert documented is valid
    assert validated is valid


async def test_the_body_limits_are_stated_in_the_document_and_on_every_body(
    document: dict[str, Any],
) -> None:
    for text in (str(MAX_JSON_BODY), str(MAX_JSON_DEPTH), "json_too_deep", "payload_too_large"):
        assert text in document["info"]["description"]
    for method, path, operation in operations(document):
        if "requestBody" in operation:
            description = operation["requestBody"]["description"]
            assert f"at most {MAX_JSON_DEPTH} levels deep" in description, f"{method} {path}"
            assert f"at most {MAX_JSON_BODY} bytes" in description, f"{method} {path}"


# -- query parameters come from the query schemas the handlers parse --------------------------

QUERY_OPERATIONS = [
    ("get", "/api/menus", MenuListQuery),
    ("delete", "/api/menus/{menu_id}", MenuDeleteQuery),
    ("get", "/api/users", UserListQuery),
    ("get", "/api/audit", AuditQuery),
    ("get", "/download", SeedDownloadQuery),
]


@pytest.mark.parametrize(("method", "path", "model"), QUERY_OPERATIONS)
async def test_query_parameters_are_documented_from_the_schema_the_handler_parses(
    document: dict[str, Any], method: str, path: str, model: type[BaseModel]
) -> None:
    operation = document["paths"][path][method]
    documented = {
        parameter["name"]: parameter
        for parameter in operation["parameters"]
        if parameter["in"] == "query"
    }
    assert set(documented) == set(model.model_fields), f"{method} {path}"
    fields = model.model_json_schema(mode="validation")["properties"]
    for name, field in model.model_fields.items():
        parameter = documented[name]
        assert parameter["required"] is field.is_required(), name
        expected = {
            key: value
            for branch in [fields[name], *fields[name].get("anyOf", ())]
            for key, value in branch.items()
            if key in (*CONSTRAINT_KEYS, "minimum", "maximum", "type", "format") and value != "null"
        }
        documented_keys = {key: parameter["schema"][key] for key in expected}
        assert documented_keys == expected, f"{path} {name}"
    assert "422" in operation["responses"]


async def test_query_parameters_carry_the_constraints_validation_enforces(
    document: dict[str, Any],
) -> None:
    users = {p["name"]: p["schema"] for p in document["paths"]["/api/users"]["get"]["parameters"]}
    assert users["limit"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert users["q"]["maxLength"] == 64
    assert users["offset"]["minimum"] == 0
    delete = document["paths"]["/api/menus/{menu_id}"]["delete"]["parameters"]
    cascade = next(p for p in delete if p["name"] == "cascade")
    assert cascade["in"] == "query" and cascade["required"] is False
    assert cascade["schema"]["enum"] == ["0", "1", "true", "false"]
    audit = {p["name"]: p for p in document["paths"]["/api/audit"]["get"]["parameters"]}
    assert audit["actor"]["schema"] == {"type": "string", "maxLength": 32}
    assert audit["before"]["schema"]["minimum"] == 1
    assert "next_before" in audit["before"]["description"]
    download = {p["name"]: p for p in document["paths"]["/download"]["get"]["parameters"]}
    assert download["url"]["required"] is True
    assert download["filename"]["required"] is False


async def test_every_handler_that_parses_a_query_string_documents_it(
    document: dict[str, Any], services: Services
) -> None:
    for rule in build_routes(services):
        declared = getattr(rule.target, "operations", None) or {}
        source = inspect.getsource(rule.target)
        for method, operation in declared.items():
            handler_method = getattr(rule.target, method.lower())
            if "self.query(" in inspect.getsource(handler_method):
                assert operation.query is not None, f"{rule.target.__name__}.{method}"
        if "get_query_argument" in source and declared:
            assert any(op.query is not None for op in declared.values()), rule.target.__name__


async def test_the_realtime_protocols_are_in_the_document(document: dict[str, Any]) -> None:
    realtime = document["info"]["x-realtime"]
    assert realtime["websocket"]["path"] == "/message"
    assert "x-realtime" in document["info"]["description"]
    assert {command["command"] for command in realtime["tcp"]["commands"]} >= {"/who", "/quit"}


async def test_the_seeds_login_by_post_user_is_documented_beside_registering(
    document: dict[str, Any],
) -> None:
    responses = document["paths"]["/user"]["post"]["responses"]
    schema_of = {
        status: responses[status]["content"]["application/json"]["schema"]["$ref"]
        for status in ("200", "201")
    }
    assert schema_of == {
        "200": "#/components/schemas/LoginResponse",
        "201": "#/components/schemas/UserResponse",
    }

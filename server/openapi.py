"""OpenAPI 3.1, generated from the route table and the pydantic schemas, never written by hand.

A JSON handler documents itself with an ``operations`` class attribute mapping each HTTP method
to an ``Operation`` (summary, request model, response model, the error statuses it can answer).
``build_openapi`` walks the application's routes, turns each path regex into a templated path
and collects every model into ``components.schemas``. Who may call an operation is not written
here: it is read from the route's requirement (``server.permissions``), the one declaration
``prepare`` enforces, as ``security`` and ``x-permission``. An operation whose handler reads its
query string with ``BaseHandler.query(Schema)`` names that schema as ``query``: each field becomes
an ``in: query`` parameter with the field's constraints, so the document and the parser agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from tornado.routing import PathMatches, Rule

from schemas.common import ErrorEnvelope
from server.handlers.base import MAX_JSON_BODY, MAX_JSON_DEPTH
from server.permissions import LOGIN, PUBLIC, rule_requirement

REF_TEMPLATE = "#/components/schemas/{model}"
PATH_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<pattern>[^)]*)\)")
BODY_ERRORS = (400, 413, 415, 422)
BODY_LIMITS = (
    f"A request body is UTF-8 JSON (`Content-Type: application/json`, else 415"
    f" `unsupported_media_type`) of at most {MAX_JSON_BODY} bytes (else 413 `payload_too_large`)"
    f" whose arrays and objects nest at most {MAX_JSON_DEPTH} levels deep (else 400"
    f" `json_too_deep`); malformed JSON is 400 `malformed_json`, and a body its schema refuses"
    f" is 422 `validation_error` naming each field."
)
"""What ``BaseHandler.parse_json`` enforces before any schema: stated in the document's
description and on every request body."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One documented method of a route."""

    summary: str
    response: type[BaseModel]
    status: int = 200
    request: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    query: type[BaseModel] | None = None
    """The query-string model the handler parses with ``BaseHandler.query`` (documented as
    ``in: query`` parameters; a bad or repeated one is 422)."""
    also: tuple[tuple[int, type[BaseModel]], ...] = ()
    """Other successful answers, as (status, model): ``POST /user`` registers (201) or, for the
    seed's clients, logs in (200)."""


def openapi_path(pattern: str) -> tuple[str, list[dict[str, Any]]]:
    """A Tornado path regex as an OpenAPI path template, with its path parameters."""
    parameters: list[dict[str, Any]] = []

    def template(match: re.Match[str]) -> str:
        numeric = re.fullmatch(r"\[0-9\](\{[0-9,]+\}|\+)?|\\d(\{[0-9,]+\}|\+)?", match["pattern"])
        schema: dict[str, Any] = (
            {"type": "integer", "minimum": 0}
            if numeric
            else {"type": "string", "pattern": f"^{match['pattern']}$"}
        )
        parameters.append({"name": match["name"], "in": "path", "required": True, "schema": schema})
        return "{" + match["name"] + "}"

    path = PATH_GROUP.sub(template, pattern.rstrip("$"))
    return path, parameters


def query_parameters(schema: type[BaseModel]) -> list[dict[str, Any]]:
    """The fields of a query-string model as OpenAPI ``in: query`` parameters.

    A missing parameter is the field's default, so only fields without one are required; the
    ``null`` alternative of an optional field is dropped (a query string cannot spell null).
    """
    document = schema.model_json_schema(mode="validation", ref_template=REF_TEMPLATE)
    if "$defs" in document:
        raise ValueError(f"{schema.__name__}: query fields must be scalars, not models")
    required = set(document.get("required", ()))
    parameters: list[dict[str, Any]] = []
    for name, spec in document.get("properties", {}).items():
        spec = dict(spec)
        description = spec.pop("description", None)
        spec.pop("title", None)
        branches = [branch for branch in spec.pop("anyOf", ()) if branch != {"type": "null"}]
        if len(branches) == 1:
            spec.update(branches[0])
        elif branches:
            spec["anyOf"] = branches
        description = description or spec.pop("description", None)
        spec.pop("title", None)
        if spec.get("default", "") is None:
            del spec["default"]
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": spec,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def build_openapi(
    rules: Iterable[Rule],
    *,
    title: str,
    version: str,
    extensions: Mapping[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route whose handler declares ``operations``;
    ``extensions`` (``x-`` keys) and ``description`` (Markdown) are added to ``info``."""
    documented: list[tuple[str, list[dict[str, Any]], str, Operation, str]] = []
    models: set[tuple[type[BaseModel], JsonSchemaMode]] = {(ErrorEnvelope, "serialization")}
    for rule in rules:
        operations: dict[str, Operation] | None = getattr(rule.target, "operations", None)
        if not operations or not isinstance(rule.matcher, PathMatches):
            continue
        path, parameters = openapi_path(rule.matcher.regex.pattern)
        requirement = rule_requirement(rule)
        if requirement is None:
            raise ValueError(f"{path} declares no requirement: declare it with route(need=...)")
        for method, operation in operations.items():
            need = requirement.for_method(method)
            documented.append((path, parameters, method.lower(), operation, need))
            models.add((operation.response, "serialization"))
            models.update((model, "serialization") for _status, model in operation.also)
            if operation.request is not None:
                models.add((operation.request, "validation"))
    keyed, definitions = models_json_schema(
        sorted(models, key=lambda item: (item[0].__name__, item[1])), ref_template=REF_TEMPLATE
    )
    paths: dict[str, dict[str, Any]] = {}
    for path, parameters, method, operation, need in documented:
        document = _operation(operation, parameters, keyed, need)
        document["operationId"] = _operation_id(method, path)
        paths.setdefault(path, {})[method] = document
    info: dict[str, Any] = {
        "title": title,
        "version": version,
        "description": f"{BODY_LIMITS}\n\n{description}" if description else BODY_LIMITS,
    }
    for key, value in (extensions or {}).items():
        if not key.startswith("x-"):
            raise ValueError(f"{key}: an OpenAPI extension's name starts with x-")
        info[key] = value
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(
    operation: Operation,
    parameters: list[dict[str, Any]],
    keyed: Mapping[tuple[Any, JsonSchemaMode], Any],
    need: str,
) -> dict[str, Any]:
    error_ref = keyed[(ErrorEnvelope, "serialization")]
    statuses = set(operation.errors)
    if operation.request is not None:
        statuses.update(BODY_ERRORS)
    if operation.query is not None:
        statuses.add(422)
    statuses.add(401)  # a bad or expired bearer token is refused on every operation
    if need not in (PUBLIC, LOGIN):
        statuses.add(403)
    if parameters:
        statuses.add(404)
    statuses.add(503)
    responses: dict[str, Any] = {
        str(operation.status): {
            "description": HTTPStatus(operation.status).phrase,
            "content": {
                "application/json": {"schema": keyed[(operation.response, "serialization")]}
            },
        }
    }
    for status, model in operation.also:
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": keyed[(model, "serialization")]}},
        }
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": error_ref}},
        }
    document: dict[str, Any] = {
        "summary": operation.summary,
        "responses": responses,
    }
    description = operation.description
    if need not in (PUBLIC, LOGIN):
        needs = f"Needs the permission `{need}` (403 `permission_required` without it)."
        description = f"{description}\n\n{needs}" if description else needs
        document["x-permission"] = need
    if description:
        document["description"] = description
    if operation.tags:
        document["tags"] = list(operation.tags)
    if operation.query is not None:
        parameters = [*parameters, *query_parameters(operation.query)]
    if parameters:
        document["parameters"] = parameters
    if operation.request is not None:
        document["requestBody"] = {
            "description": BODY_LIMITS,
            "required": True,
            "content": {"application/json": {"schema": keyed[(operation.request, "validation")]}},
        }
    if need != PUBLIC:
        document["security"] = [{"bearer": []}]
    return document


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path) or ["root"]
    return "_".join([method, *words])

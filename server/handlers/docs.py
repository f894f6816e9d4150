"""The API description: ``/openapi.json`` for machines and ``/docs`` for people.

``/docs`` renders the same document: each schema as a table of its properties (``$ref``s
followed, nested models indented under the property that holds them), the query and path
parameters, the realtime protocols (``x-realtime``), and a form per operation that sends the
request from the page (``static/js/docs.js``) with the bearer token typed at the top.

The page's own words (headings, labels, constraints, "try it out") are in the reader's
language; what comes from the document itself (summaries from docstrings, schema and field
descriptions) is developer reference in English, and the page says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from schemas.text import Text, ntext
from server.handlers.base import ApiHandler, PageHandler
from server.permissions import Requirement
from server.services import Services

SCHEMA_PREFIX = "#/components/schemas/"
MAX_SCHEMA_DEPTH = 6
"""Nested models shown below a property, at most this deep (the rest are named, not opened)."""
CONSTRAINTS: Final[tuple[tuple[str, Callable[[str], Text | str]], ...]] = (
    ("minLength", lambda value: Text("min length {value}", value=value)),
    ("maxLength", lambda value: Text("max length {value}", value=value)),
    ("pattern", lambda value: Text("pattern {value}", value=value)),
    ("format", lambda value: Text("format {value}", value=value)),
    ("minimum", lambda value: f"≥ {value}"),
    ("exclusiveMinimum", lambda value: f"> {value}"),
    ("maximum", lambda value: f"≤ {value}"),
    ("exclusiveMaximum", lambda value: f"< {value}"),
    ("minItems", lambda value: Text("min items {value}", value=value)),
    ("maxItems", lambda value: Text("max items {value}", value=value)),
    ("minProperties", lambda value: Text("min fields {value}", value=value)),
    ("enum", lambda value: Text("one of {value}", value=value)),
    ("const", lambda value: Text("always {value}", value=value)),
    ("default", lambda value: Text("default {value}", value=value)),
)
"""Each validation keyword as the label a table shows (comparisons as their symbol)."""


_Pending = tuple[dict[str, Any], int, frozenset[str], str]
"""A schema still to open: the schema, its depth, the models open above it, the name prefix."""


@dataclass(frozen=True, slots=True)
class Row:
    """One property of a resolved schema, as a table row."""

    depth: int
    name: str
    type: str
    required: bool
    constraints: tuple[Text | str, ...]
    description: Text | str
    """The document's description (English, as written), or a note of the page's own."""


class OpenApiHandler(ApiHandler):
    """``GET /openapi.json``: the OpenAPI 3.1 document generated at start-up."""

    def initialize(  # type: ignore[override]
        self, services: Services, need: Requirement, document: dict[str, Any]
    ) -> None:
        """Receive the generated document."""
        super().initialize(services, need)
        self.document = document

    async def get(self) -> None:
        """Serve the document."""
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        await self.finish(json.dumps(self.document, ensure_ascii=False))


class DocsPageHandler(PageHandler):
    """``GET /docs``: every operation with its parameters and resolved request and response
    schemas, the realtime protocols, and "try it out"; server-rendered, no CDN."""

    def initialize(  # type: ignore[override]
        self, services: Services, need: Requirement, document: dict[str, Any]
    ) -> None:
        """Receive the generated document."""
        super().initialize(services, need)
        self.document = document
        self.schemas = SchemaTables(document)

    async def get(self) -> None:
        """Render ``docs.html``."""
        await self.render_page("docs.html", **docs_namespace(self.document, self.schemas))


def docs_namespace(document: dict[str, Any], schemas: SchemaTables | None = None) -> dict[str, Any]:
    """What ``docs.html`` renders ``document`` with."""
    return {
        "document": document,
        "schemas": schemas or SchemaTables(document),
        "pretty": pretty,
        "body_schema": body_schema,
        "realtime": document["info"].get("x-realtime"),
    }


def pretty(value: Any) -> str:
    """``value`` as indented JSON (examples)."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False)


def body_schema(part: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a request body or response."""
    schema: dict[str, Any] = part["content"]["application/json"]["schema"]
    return schema


class SchemaTables:
    """The document's schemas resolved for reading: names, property rows and example bodies."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.components: dict[str, Any] = document["components"]["schemas"]

    def resolve(self, schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The component name (when ``schema`` is a ``$ref``) and the schema it stands for;
        chains of references are followed a bounded number of times."""
        name = None
        for _ in range(MAX_SCHEMA_DEPTH):
            ref = schema.get("$ref")
            if not isinstance(ref, str) or not ref.startswith(SCHEMA_PREFIX):
                break
            name = ref.removeprefix(SCHEMA_PREFIX)
            schema = self.components.get(name, {})
        return name, schema

    def type_label(self, schema: dict[str, Any]) -> str:
        """A short type: ``string``, ``integer | null``, ``array<MenuRead>``, ``MenuRead``."""
        labels: list[str] = []
        pending: list[dict[str, Any]] = [schema]
        # Iterative, like every walk over the document: anyOf and array items nest freely.
        while pending and len(labels) < 16:
            current = pending.pop(0)
            name, resolved = self.resolve(current)
            if name is not None:
                labels.append(name)
            elif "anyOf" in current or "oneOf" in current:
                pending[:0] = list(current.get("anyOf") or current.get("oneOf") or [])
            elif current.get("type") == "array":
                items = current.get("items")
                item_name = self.resolve(items)[0] if isinstance(items, dict) else None
                item_type = item_name or (items or {}).get("type", "any")
                labels.append(f"array<{item_type}>")
            elif isinstance(resolved.get("type"), list):
                labels.extend(str(kind) for kind in resolved["type"])
            else:
                labels.append(str(resolved.get("type", "any")))
        return " | ".join(dict.fromkeys(labels))

    def constraints(self, schema: dict[str, Any]) -> tuple[Text | str, ...]:
        """The validation keywords of a property (its non-null alternatives included), each a
        label for the reader's language (``text`` in the template)."""
        found: list[Text | str] = []
        branches = [schema, *schema.get("anyOf", ())]
        for branch in branches:
            _, resolved = self.resolve(branch)
            if branch.get("$ref"):
                continue  # a nested model: its own rows say what it accepts
            for key, label in CONSTRAINTS:
                if key in resolved:
                    value = resolved[key]
                    shown = (
                        ", ".join(json.dumps(item, ensure_ascii=False) for item in value)
                        if isinstance(value, list)
                        else json.dumps(value, ensure_ascii=False)
                        if not isinstance(value, str) or key in ("default", "const")
                        else value
                    )
                    text = label(shown)
                    if text not in found:
                        found.append(text)
        return tuple(found)

    def notes(self, schema: dict[str, Any]) -> list[Text | str]:
        """What a model says about itself: its description (as written), whether other keys
        are refused, how many it needs (the page's words, as ``Text``)."""
        _, resolved = self.resolve(schema)
        notes: list[Text | str] = []
        if resolved.get("description"):
            notes.append(str(resolved["description"]))
        if resolved.get("additionalProperties") is False:
            notes.append(Text("Fields not in this table are refused (422)."))
        if resolved.get("minProperties"):
            count = int(resolved["minProperties"])
            notes.append(
                ntext("Give at least {count} field.", "Give at least {count} fields.", count)
            )
        return notes

    def rows(self, schema: dict[str, Any]) -> list[Row]:
        """The properties of ``schema`` as rows, each nested model's rows right below the
        property that holds it. Iterative (a stack, not recursion) and bounded: at most
        MAX_SCHEMA_DEPTH levels, and a model already open above (a tree's children) is named,
        not opened again."""
        rows: list[Row] = []
        root_name, _ = self.resolve(schema)
        stack: list[Row | _Pending] = [(schema, 0, frozenset({root_name} if root_name else ()), "")]
        while stack:
            item = stack.pop()
            if isinstance(item, Row):
                rows.append(item)
                continue
            current, depth, opened, prefix = item
            _, resolved = self.resolve(current)
            required = set(resolved.get("required") or ())
            expanded: list[Row | _Pending] = []
            for name, prop in (resolved.get("properties") or {}).items():
                nested = self.nested_model(prop)
                description: Text | str = str(prop.get("description") or "")
                child: _Pending | None = None
                if nested is not None:
                    model_name, model_schema, many = nested
                    if model_name in opened:
                        description = description or Text("{model} (as above)", model=model_name)
                    elif depth + 1 < MAX_SCHEMA_DEPTH:
                        path = f"{prefix}{name}[]." if many else f"{prefix}{name}."
                        child = (model_schema, depth + 1, opened | {model_name}, path)
                expanded.append(
                    Row(
                        depth=depth,
                        name=f"{prefix}{name}",
                        type=self.type_label(prop),
                        required=name in required,
                        constraints=self.constraints(prop),
                        description=description,
                    )
                )
                if child is not None:
                    expanded.append(child)
            stack.extend(reversed(expanded))
        return rows

    def nested_model(self, prop: dict[str, Any]) -> tuple[str, dict[str, Any], bool] | None:
        """The model a property holds (directly, optionally, or as array items), if any."""
        for branch in [prop, *prop.get("anyOf", ())]:
            many = branch.get("type") == "array"
            target = branch.get("items") if many else branch
            if isinstance(target, dict):
                name, resolved = self.resolve(target)
                if name is not None and resolved.get("properties"):
                    return name, target, many
        return None

    def example(self, schema: dict[str, Any]) -> str:
        """A body to start from: every property with its default, or an empty value."""
        _, resolved = self.resolve(schema)
        body: dict[str, Any] = {}
        for name, prop in (resolved.get("properties") or {}).items():
            if "default" in prop:
                body[name] = prop["default"]
                continue
            kinds = {branch.get("type") for branch in [prop, *prop.get("anyOf", ())]}
            body[name] = (
                ""
                if "string" in kinds
                else 0
                if kinds & {"integer", "number"}
                else False
                if "boolean" in kinds
                else []
                if "array" in kinds
                else None
            )
        return pretty(body)

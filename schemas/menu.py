"""Schemas of menus: the tree a user sees, and the menu administration API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, model_validator
from pydantic.json_schema import WithJsonSchema

from schemas.common import RequestSchema, Schema
from schemas.permission import PermissionCode
from schemas.text import Text


def _single_line(value: str) -> str:
    if not value.strip() or not value.isprintable():
        raise ValueError(Text("must be printable text on one line"))
    return value


def _local_path(value: str) -> str:
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        raise ValueError(Text("must be a local path starting with / (not //)"))
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError(Text("must not contain spaces or control characters"))
    return value


MenuAudience = Literal["all", "visitors", "members"]
"""Who a menu is shown to among those it is granted to: everyone, only visitors who are not
logged in (登录), only logged-in users."""


class MenuTreeNode(Schema):
    """A menu and its children, to any depth."""

    id: int
    title: str
    url: str | None
    note: str | None
    sort: int
    visible: bool
    permission: str | None = None
    audience: MenuAudience = "all"
    children: list[MenuTreeNode]


MenuTitle = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_single_line)]
MenuUrl = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_local_path)]
MenuNote = Annotated[str, Field(max_length=2000)]
SortKey = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
MenuId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class MenuCreate(RequestSchema):
    """``POST /api/menus``: a new menu (a root when ``parent_id`` is null)."""

    title: MenuTitle
    url: MenuUrl | None = None
    note: MenuNote | None = None
    parent_id: MenuId | None = None
    sort: SortKey = 0
    visible: StrictBool = True
    permission: PermissionCode | None = None
    """The permission the menu's page needs; the menu is shown only to holders."""
    audience: MenuAudience = "all"
    """``visitors``: hidden once logged in (登录); ``members``: hidden from visitors."""


class MenuUpdate(RequestSchema):
    """``PATCH /api/menus/{id}``: any subset of the fields; ``parent_id: null`` makes it a root."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    title: Annotated[
        MenuTitle | None, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64})
    ] = None
    url: MenuUrl | None = None
    note: MenuNote | None = None
    parent_id: MenuId | None = None
    sort: Annotated[SortKey | None, WithJsonSchema({"type": "integer"})] = None
    visible: Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})] = None
    permission: PermissionCode | None = None
    audience: Annotated[
        MenuAudience | None,
        WithJsonSchema({"type": "string", "enum": ["all", "visitors", "members"]}),
    ] = None

    @model_validator(mode="after")
    def _required_fields_stay_set(self) -> MenuUpdate:
        for name in ("title", "sort", "visible", "audience"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(Text("{name} cannot be null", name=name))
        if not self.model_fields_set:
            raise ValueError(Text("give at least one field to change"))
        return self


class MenuRead(Schema):
    """A menu without its children."""

    id: int
    title: str
    url: str | None
    note: str | None
    parent_id: int | None
    sort: int
    visible: bool
    permission: str | None = None
    audience: MenuAudience = "all"


class MenuResponse(Schema):
    """One menu, with ``msg``."""

    msg: Literal["success"] = "success"
    menu: MenuRead


class MenuList(Schema):
    """Every menu as a flat list (``?flat=1``)."""

    msg: Literal["success"] = "success"
    items: list[MenuRead]
    count: int


class MenuTree(Schema):
    """The menu forest."""

    msg: Literal["success"] = "success"
    menus: list[MenuTreeNode]


class MenuDeleted(Schema):
    """What a delete removed (the menu and, with cascade, its subtree)."""

    msg: Literal["success"] = "success"
    deleted: list[int]

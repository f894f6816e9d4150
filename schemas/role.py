"""Schemas of the role administration API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.json_schema import WithJsonSchema

from schemas.common import RequestSchema, Schema
from schemas.menu import MenuId
from schemas.permission import PermissionCode
from schemas.text import Text

RoleName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
RoleDescription = Annotated[str, Field(max_length=255)]


class RoleCreate(RequestSchema):
    """``POST /api/roles``."""

    name: RoleName
    description: RoleDescription | None = None


class RoleUpdate(RequestSchema):
    """``PATCH /api/roles/{id}``."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Annotated[
        RoleName | None, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64})
    ] = None
    description: RoleDescription | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> RoleUpdate:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError(Text("{name} cannot be null", name="name"))
        if not self.model_fields_set:
            raise ValueError(Text("give name or description"))
        return self


class RoleMenus(RequestSchema):
    """``PUT /api/roles/{id}/menus``: the complete set of menus the role grants."""

    menu_ids: list[MenuId] = Field(max_length=10_000)


class RolePermissions(RequestSchema):
    """``PUT /api/roles/{id}/permissions``: the complete set of permissions the role grants."""

    permissions: list[PermissionCode] = Field(max_length=1_000)


class RoleRead(Schema):
    """A role, the menus and the permissions it grants."""

    id: int
    name: str
    description: str | None
    menu_ids: list[int]
    permissions: list[str] = Field(default_factory=list)


class RoleResponse(Schema):
    """One role, with ``msg``."""

    msg: Literal["success"] = "success"
    role: RoleRead


class RoleList(Schema):
    """Every role."""

    msg: Literal["success"] = "success"
    items: list[RoleRead]
    count: int

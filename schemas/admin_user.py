"""Schemas of the user administration API (``/api/users``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictBool, model_validator
from pydantic.json_schema import WithJsonSchema

from schemas.common import RequestSchema, Schema
from schemas.text import Text
from schemas.user import UserRead

RoleId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class UserStatusUpdate(RequestSchema):
    """``PATCH /api/users/{id}``: activate/deactivate, promote/demote."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    is_active: Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})] = None
    is_superuser: Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})] = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UserStatusUpdate:
        if not self.model_fields_set:
            raise ValueError(Text("give is_active or is_superuser"))
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(Text("{name} cannot be null", name=name))
        return self


class UserRoles(RequestSchema):
    """``PUT /api/users/{id}/roles``: the complete set of the user's roles."""

    role_ids: list[RoleId] = Field(max_length=1_000)


class UserAdminRead(UserRead):
    """A user as administrators see them: with their role ids."""

    role_ids: list[int]


class UserAdminResponse(Schema):
    """One user, with ``msg``."""

    msg: Literal["success"] = "success"
    user: UserAdminRead


class UserPage(Schema):
    """A page of users."""

    msg: Literal["success"] = "success"
    items: list[UserAdminRead]
    count: int = Field(description="Users matching the search, over all pages.")
    offset: int
    limit: int


class SessionsRevoked(Schema):
    """How many sessions were revoked."""

    msg: Literal["success"] = "success"
    revoked: int

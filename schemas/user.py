"""Schemas of the ``/user`` resource (seed §4): login, registration, profile, password, sessions."""

from __future__ import annotations

import datetime as dt
import re
from enum import IntEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import WithJsonSchema

from schemas.common import RequestSchema, Schema
from schemas.menu import MenuTreeNode
from schemas.text import Text
from server.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

MOBILE_PATTERN = r"^(?:1[3-9][0-9]{9}|\+[1-9][0-9]{6,14})$"
"""ASCII digits only (a Unicode digit class would admit ``١٢٣``), the whole value (checked with
``fullmatch``, so no trailing newline slips past ``$``); published as is in the OpenAPI document."""


NAME_RULE = "printable characters, without leading or trailing spaces"
"""How the OpenAPI document describes a name (the refusal itself is a translated ``Text``)."""


def _printable_name(value: str) -> str:
    if not value.isprintable() or value != value.strip():
        raise ValueError(Text("must be printable characters, without leading or trailing spaces"))
    return value


def _mobile_number(value: str) -> str:
    if re.fullmatch(MOBILE_PATTERN, value) is None:
        raise ValueError(
            Text("must be an 11-digit Chinese mobile number or an E.164 number (+...)")
        )
    return value


UserName = Annotated[
    str,
    Field(min_length=1, max_length=32, description=f"1 to 32 {NAME_RULE}."),
    AfterValidator(_printable_name),
]
"""1 to 32 printable characters."""

NAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 32,
    "description": f"1 to 32 {NAME_RULE}.",
}
"""How a name that may be omitted but never null is documented."""

Password = Annotated[str, Field(min_length=1, max_length=1024)]
"""A password as sent; the policy (8 to 128 characters, not common) is checked separately so its
reasons can name the rule."""

NewPassword = Annotated[
    Password,
    Field(
        description=(
            f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters, not a common password,"
            " not the account name (nor the current password); a breach of the policy is 422"
            " naming the rule."
        ),
        json_schema_extra={"minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD_LENGTH},
    ),
]
"""A password being chosen: documented with the policy's bounds, which ``password_problems``
enforces (so its 422 names the rule)."""

Mobile = Annotated[
    str,
    Field(max_length=16, json_schema_extra={"pattern": MOBILE_PATTERN}),
    AfterValidator(_mobile_number),
]
"""An 11-digit Chinese mobile number (1[3-9]xxxxxxxxx) or an E.164 number."""

City = Annotated[str, Field(min_length=1, max_length=64)]


class MobileType(IntEnum):
    """The client's OS (seed §4): 1 android, 2 ios, 3 pc."""

    ANDROID = 1
    IOS = 2
    PC = 3


DEVICE_NAMES = {MobileType.ANDROID: "android", MobileType.IOS: "ios", MobileType.PC: "pc"}


class LoginRequest(RequestSchema):
    """``GET /user`` with a JSON body (the seed's client) or ``POST /user/login``."""

    name: UserName
    pwd: Password
    mobile_type: MobileType | None = None


class RegisterRequest(RequestSchema):
    """``POST /user``: a new account; superuser status cannot be asked for."""

    name: UserName
    pwd: NewPassword
    mobile: Mobile | None = None
    city: City | None = None


class ProfileUpdate(RequestSchema):
    """``PUT /user``: change any of name, mobile, city (null clears mobile or city)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Annotated[UserName | None, WithJsonSchema(NAME_SCHEMA)] = None
    mobile: Mobile | None = None
    city: City | None = None

    @model_validator(mode="after")
    def _name_cannot_be_cleared(self) -> ProfileUpdate:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError(Text("name cannot be null"))
        if not self.model_fields_set:
            raise ValueError(Text("give at least one of name, mobile, city"))
        return self


class PasswordChange(RequestSchema):
    """``PUT /user/password`` (or ``PUT /user`` with exactly these keys)."""

    old_pwd: Password
    new_pwd: NewPassword


class AccountClose(RequestSchema):
    """``DELETE /user/account``: the password confirms the closure."""

    pwd: Password


class UserRead(Schema):
    """A user as the API shows it: never the password hash."""

    id: int
    name: str
    mobile: str | None
    city: str | None
    last_login_device: str | None
    email: str | None = None
    email_verified: bool = False
    is_active: bool
    is_superuser: bool
    created_at: dt.datetime


class UserResponse(Schema):
    """A single user, with ``msg``."""

    msg: Literal["success"] = "success"
    user: UserRead


class LoginResponse(Schema):
    """A successful login: the bearer token (shown once) and the user."""

    msg: Literal["success"] = "success"
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    expires_at: dt.datetime
    user: UserRead


class MeResponse(Schema):
    """The current user: profile, role names and the menu tree their roles grant."""

    msg: Literal["success"] = "success"
    user: UserRead
    roles: list[str]
    menus: list[MenuTreeNode]


class SessionRead(Schema):
    """One live login of the user."""

    id: int
    device: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    current: bool = Field(description="True for the token this request was made with.")


class SessionList(Schema):
    """The user's live logins."""

    msg: Literal["success"] = "success"
    items: list[SessionRead]
    count: int

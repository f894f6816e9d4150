"""Shared schema pieces: the base models, the error envelope, reused constrained types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Schema(BaseModel):
    """Base of response models: built from ORM objects or plain values."""

    model_config = ConfigDict(from_attributes=True)


class RequestSchema(BaseModel):
    """Base of request models: unknown keys are an error, strings are stripped of nothing."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ErrorItem(Schema):
    """One reason a request was refused, tied to the field it concerns (empty for the body)."""

    field: str = Field(description="Dotted path of the offending field; empty for the whole body.")
    reason: str


class ErrorEnvelope(Schema):
    """The one shape of every error response."""

    msg: str = Field(description="A human-readable reason.")
    code: str = Field(description="A machine-readable reason, stable across releases.")
    errors: list[ErrorItem] = Field(default_factory=list)


class Success(Schema):
    """A response that only says the request succeeded."""

    msg: Literal["success"] = "success"

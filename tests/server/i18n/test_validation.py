"""Pydantic's errors rebuilt as translatable sentences from their type and limits."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.text import Text
from server.i18n.validation import INVALID, validation_reason


class Sample(BaseModel):
    """A model with one field of each common kind of rule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=3, max_length=5)
    age: int = Field(ge=0, le=150)
    colour: Literal["red", "blue"] = "red"
    nickname: str = ""

    @field_validator("nickname")
    @classmethod
    def no_spaces(cls, value: str) -> str:
        """Our own rule, worded as a Text."""
        if " " in value:
            raise ValueError(Text("must not contain spaces"))
        return value


def reasons(data: dict[str, object]) -> dict[str, Text | str]:
    """Each failing field and its sentence."""
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate(data)
    return {
        ".".join(map(str, detail["loc"])): validation_reason(detail)
        for detail in caught.value.errors(include_url=False, include_input=False)
    }


def test_limits_come_from_the_error_context() -> None:
    found = reasons({"name": "ab", "age": 200})
    assert found["age"] == Text("must be at most {le}", le=150)
    assert str(found["name"]) == "must be at least 3 characters"
    assert set(found) == {"name", "age"}


def test_a_limit_of_one_reads_in_the_singular() -> None:
    class One(BaseModel):
        code: str = Field(min_length=1)

    with pytest.raises(ValidationError) as caught:
        One.model_validate({"code": ""})
    assert str(validation_reason(caught.value.errors()[0])) == "must be at least 1 character"


def test_missing_extra_wrong_type_and_choice_have_sentences() -> None:
    found = reasons({"age": "x", "colour": "green", "extra": 1})
    assert found["name"] == Text("this field is required")
    assert found["age"] == Text("must be a whole number")
    assert str(found["colour"]).startswith("must be one of")
    assert found["extra"] == Text("this field is not part of the request")


def test_our_own_validator_keeps_its_text() -> None:
    found = reasons({"name": "abc", "age": 1, "nickname": "a b"})
    assert found == {"nickname": Text("must not contain spaces")}


def test_a_plain_value_error_is_not_shown_in_english() -> None:
    class Plain(BaseModel):
        value: int

        @field_validator("value")
        @classmethod
        def odd(cls, value: int) -> int:
            raise ValueError("an English sentence nobody translated")

    with pytest.raises(ValidationError) as caught:
        Plain.model_validate({"value": 1})
    assert validation_reason(caught.value.errors()[0]) == INVALID

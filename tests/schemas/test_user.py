"""The /user request schemas: strict fields, and bodies nested as deep as the parser allows."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from schemas.text import Text
from schemas.user import (
    AccountClose,
    LoginRequest,
    PasswordChange,
    ProfileUpdate,
    RegisterRequest,
)
from server.handlers.base import MAX_JSON_DEPTH
from server.i18n import locale_for, translate
from server.i18n.validation import validation_reason

REQUEST_MODELS = [LoginRequest, RegisterRequest, ProfileUpdate, PasswordChange, AccountClose]


@pytest.mark.parametrize("model", REQUEST_MODELS, ids=lambda model: model.__name__)
def test_a_field_nested_to_the_depth_limit_is_refused_without_recursing(
    model: type[BaseModel],
) -> None:
    # The object itself is one level: its values may nest one level less than the limit.
    value = json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))
    with pytest.raises(ValidationError) as refused:
        model.model_validate({field: value for field in model.model_fields})
    fields = {str(error["loc"][0]) for error in refused.value.errors() if error["loc"]}
    assert fields == set(model.model_fields)


@pytest.mark.parametrize(
    "mobile", ["13٨١٢٣٤٥٦٧٨", "１３８１２３４５６７８", "13812345678\n", "+4915112345678\n"]
)
def test_mobile_takes_ascii_digits_only_and_no_trailing_newline(mobile: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RegisterRequest(name="cxk", pwd="x", mobile=mobile)
    assert [error["loc"] for error in refused.value.errors()] == [("mobile",)]
    with pytest.raises(ValidationError):
        ProfileUpdate(mobile=mobile)


@pytest.mark.parametrize("mobile", ["13812345678", "19912345678", "+4915112345678", "+1234567"])
def test_mobile_accepts_chinese_and_e164_numbers(mobile: str) -> None:
    assert RegisterRequest(name="cxk", pwd="x", mobile=mobile).mobile == mobile


@pytest.mark.parametrize(
    ("data", "english", "chinese"),
    [
        (
            {"name": " cxk", "pwd": "x"},
            "must be printable characters, without leading or trailing spaces",
            "必须是可打印字符，且首尾不能有空格",
        ),
        (
            {"name": "cxk", "pwd": "x", "mobile": "12345"},
            "must be an 11-digit Chinese mobile number or an E.164 number (+...)",
            "必须是 11 位中国大陆手机号或 E.164 格式的号码（+...）",
        ),
    ],
)
def test_our_own_refusals_are_sentences_the_reader_gets_in_their_language(
    data: dict[str, str], english: str, chinese: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        RegisterRequest.model_validate(data)
    [error] = refused.value.errors()
    reason = validation_reason(error)

    assert isinstance(reason, Text)
    assert translate(locale_for("en_US"), reason) == english
    assert translate(locale_for("zh_CN"), reason) == chinese


def test_an_empty_profile_change_says_what_to_give() -> None:
    with pytest.raises(ValidationError) as refused:
        ProfileUpdate.model_validate({})
    reason = validation_reason(refused.value.errors()[0])

    assert translate(locale_for("zh_CN"), reason) == "请至少提供 name、mobile、city 之一"

"""Email addresses: normalised (stripped, lower-cased), strict, at most 254 characters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.recovery import EmailChange, PasswordForgot, email_problem, normalise_email
from server.i18n import locale_for, translate
from server.i18n.validation import validation_reason


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  Alice.Smith@Example.COM ", "alice.smith@example.com"),
        ("a+tag@mail.example.cn\n", "a+tag@mail.example.cn"),
        ("o'brien@x-y.example.org", "o'brien@x-y.example.org"),
    ],
)
def test_an_address_is_stored_stripped_and_lower_cased(typed: str, stored: str) -> None:
    assert normalise_email(typed) == stored
    assert PasswordForgot(email=typed).email == stored


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "plain",
        "@example.com",
        "a@",
        "a@localhost",
        "a..b@example.com",
        ".a@example.com",
        "a@-example.com",
        "a@example.c",
        "a b@example.com",
        "a@exam\nple.com",
        "用户@example.com",
        "a@例子.com",
        "a<script>@example.com",
        "a@example.com@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 63 + "." + ("c" * 63 + ".") * 3 + "com",
    ],
)
def test_an_invalid_address_is_refused(typed: str) -> None:
    with pytest.raises(ValidationError):
        PasswordForgot(email=typed)


def test_an_address_longer_than_254_characters_is_refused() -> None:
    local = "a" * 64
    domain = ".".join(["b" * 60] * 3) + ".example.com"  # 196 characters
    assert len(f"{local}@{domain}") > 254
    with pytest.raises(ValueError, match="254"):
        normalise_email(f"{local}@{domain}")


def test_null_removes_the_address_but_it_must_be_given() -> None:
    assert EmailChange(email=None, pwd="current").email is None
    with pytest.raises(ValidationError):
        EmailChange.model_validate({"pwd": "current"})
    with pytest.raises(ValidationError):
        EmailChange.model_validate({"email": None}), "the current password is required"


@pytest.mark.parametrize(
    ("typed", "chinese"),
    [
        ("plain", "必须是邮箱地址，例如 name@example.com"),
        ("x" * 65 + "@example.com", "@ 之前的部分最多 64 个字符"),
    ],
)
def test_a_refused_address_says_why_in_the_readers_language(typed: str, chinese: str) -> None:
    with pytest.raises(ValueError) as refused:
        normalise_email(typed)
    reason = email_problem(refused.value)

    assert translate(locale_for("zh_CN"), reason) == chinese
    assert translate(locale_for("en_US"), reason) == str(reason)
    with pytest.raises(ValidationError) as invalid:
        PasswordForgot(email=typed)
    assert validation_reason(invalid.value.errors()[0]) == reason

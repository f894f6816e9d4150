"""The password policy: each rule refuses with its own sentence; good passphrases pass."""

from __future__ import annotations

import pytest

from schemas.text import Text
from server.i18n import locale_for, translate
from server.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from server.security.policy import common_passwords, password_problems

TOO_SHORT = Text("must be at least {min_length} characters", min_length=8)
TOO_LONG = Text("must be at most {max_length} characters", max_length=128)
COMMON = Text("is one of the most common passwords; choose another")
IS_NAME = Text("must not be the account name")
IS_OLD = Text("must differ from the current password")


def test_a_good_passphrase_has_no_problems() -> None:
    assert password_problems("correct horse battery staple", name="alice") == []


def test_a_password_of_seven_characters_is_too_short() -> None:
    assert password_problems("k3q!zv9", name="alice") == [TOO_SHORT]


def test_a_password_of_129_characters_is_too_long() -> None:
    assert password_problems("k3q!zv9 " * 16 + "x", name="alice") == [TOO_LONG]


def test_the_length_limits_themselves_are_allowed() -> None:
    assert MIN_PASSWORD_LENGTH == 8
    assert MAX_PASSWORD_LENGTH == 128
    assert password_problems("k3q!zv9w", name="alice") == []
    assert password_problems("k3q!zv9 " * 16, name="alice") == []


@pytest.mark.parametrize("password", ["password123", "PASSWORD123", "PassWord123"])
def test_a_common_password_is_refused_whatever_its_case(password: str) -> None:
    assert password_problems(password, name="alice") == [COMMON]


@pytest.mark.parametrize("name", ["Winston Smith", "winston smith", "WINSTON SMITH"])
def test_a_password_equal_to_the_name_is_refused_whatever_its_case(name: str) -> None:
    assert password_problems("Winston Smith", name=name) == [IS_NAME]


def test_a_password_equal_to_the_old_one_is_refused() -> None:
    problems = password_problems(
        "correct horse battery", name="a", old_password="correct horse battery"
    )
    assert problems == [IS_OLD]


def test_a_new_password_that_differs_from_the_old_one_passes() -> None:
    problems = password_problems("correct horse battery", name="a", old_password="staple and more")
    assert problems == []


def test_every_broken_rule_is_reported() -> None:
    assert password_problems("password", name="PASSWORD", old_password="password") == [
        COMMON,
        IS_NAME,
        IS_OLD,
    ]


def test_the_deny_list_has_at_least_ten_thousand_lower_case_entries() -> None:
    entries = common_passwords()
    assert len(entries) >= 10_000
    assert "password123" in entries
    assert all(entry == entry.casefold() for entry in entries)
    assert not any(entry.startswith("#") for entry in entries)


def test_each_problem_is_a_sentence_in_english_and_chinese() -> None:
    problems = password_problems("password", name="PASSWORD", old_password="password")
    english, chinese = locale_for("en_US"), locale_for("zh_CN")

    assert [str(problem) for problem in problems] == [
        "is one of the most common passwords; choose another",
        "must not be the account name",
        "must differ from the current password",
    ]
    assert [translate(english, problem) for problem in problems] == [
        str(problem) for problem in problems
    ]
    assert [translate(chinese, problem) for problem in problems] == [
        "是最常见的密码之一，请换一个",
        "不能与用户名相同",
        "不能与当前密码相同",
    ]
    assert translate(chinese, TOO_SHORT) == "至少需要 8 个字符"

"""The password policy: each rule refuses with its own sentence; good passphrases pass."""

from __future__ import annotations

import pytest

from server.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from server.security.policy import common_passwords, password_problems

TOO_SHORT = "must be at least 8 characters"
TOO_LONG = "must be at most 128 characters"
COMMON = "is one of the most common passwords; choose another"
IS_NAME = "must not be the account name"
IS_OLD = "must differ from the current password"


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

"""Choosing a language from what a reader asks for."""

from __future__ import annotations

import pytest

from server.i18n import DEFAULT_LANGUAGE, LANGUAGES, negotiate, supported


def test_chinese_is_the_default_and_english_is_offered() -> None:
    assert DEFAULT_LANGUAGE == "zh_CN"
    assert set(LANGUAGES) == {"zh_CN", "en_US"}


@pytest.mark.parametrize(
    ("code", "language"),
    [
        ("en", "en_US"),
        ("en-GB", "en_US"),
        ("EN_us", "en_US"),
        ("zh", "zh_CN"),
        ("zh-TW", "zh_CN"),
        ("zh-Hans-CN", "zh_CN"),
        ("fr", None),
        ("", None),
        (None, None),
        ("*", None),
    ],
)
def test_a_code_is_matched_by_its_language(code: str | None, language: str | None) -> None:
    assert supported(code) == language


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("en-US,en;q=0.9", "en_US"),
        ("fr-FR,fr;q=0.9,en;q=0.8", "en_US"),
        ("fr-FR,fr;q=0.9", None),
        ("en;q=0.5,zh-CN;q=0.8", "zh_CN"),
        ("zh-CN;q=0,en", "en_US"),
        ("de;q=bad,en;q=0.1", "en_US"),
        ("en;q=0.7,zh;q=0.7", "en_US"),
        ("", None),
        (None, None),
    ],
)
def test_accept_language_is_ranked_by_weight_then_order(
    header: str | None, language: str | None
) -> None:
    assert negotiate(header) == language


def test_an_absurdly_long_header_is_read_only_so_far() -> None:
    header = ",".join(["xx"] * 10_000 + ["en"])
    assert negotiate(header) is None

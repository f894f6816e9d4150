"""``Text``: a message kept in English until the reader's language is known."""

from __future__ import annotations

from schemas.text import Joined, Text, ntext

CHINESE = {
    "menu {id} does not exist": "菜单 {id} 不存在",
    "{count} download": "{count} 个下载",
    "why: {reason}": "原因：{reason}",
    "too short": "太短",
    "broken {nope}": "坏的 {missing}",
}


def to_chinese(message: str, plural: str | None = None, count: int | None = None) -> str:
    """A stand-in for ``Locale.translate`` with a tiny catalog (Chinese has one plural form)."""
    return CHINESE.get(message, message)


def to_english(message: str, plural: str | None = None, count: int | None = None) -> str:
    """The source language: the plural form when ``count`` is not 1."""
    return plural if plural is not None and count != 1 else message


def test_str_is_the_english_sentence_with_its_parameters() -> None:
    assert str(Text("menu {id} does not exist", id=7)) == "menu 7 does not exist"


def test_translate_fills_the_translation_with_the_same_parameters() -> None:
    assert Text("menu {id} does not exist", id=7).translate(to_chinese) == "菜单 7 不存在"


def test_a_parameter_that_is_text_is_translated_too() -> None:
    message = Text("why: {reason}", reason=Text("too short"))
    assert message.translate(to_chinese) == "原因：太短"
    assert str(message) == "why: too short"


def test_plurals_choose_by_count_and_count_is_a_parameter() -> None:
    one, many = (
        ntext("{count} download", "{count} downloads", 1),
        ntext("{count} download", "{count} downloads", 3),
    )
    assert (str(one), str(many)) == ("1 download", "3 downloads")
    assert many.translate(to_english) == "3 downloads"
    assert many.translate(to_chinese) == "3 个下载"


def test_joined_translates_each_part() -> None:
    joined = Joined([Text("too short"), "as typed"])
    assert joined.translate(to_chinese) == "太短; as typed"
    assert str(joined) == "too short; as typed"


def test_a_translation_naming_an_unknown_placeholder_does_not_raise() -> None:
    assert Text("broken {nope}", nope=1).translate(to_chinese) == "坏的 {missing}"


def test_texts_compare_by_message_and_parameters() -> None:
    assert Text("a {x}", x=1) == Text("a {x}", x=1)
    assert Text("a {x}", x=1) != Text("a {x}", x=2)
    assert Text("a {x}", x=1) != "a 1"

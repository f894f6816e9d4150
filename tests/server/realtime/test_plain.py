"""The seed's plain-text format (``server/realtime/plain.py``): the lines each hub frame becomes,
in Chinese (the seed's exact lines) and in English, HTML-escaped for the seed's ``innerHTML``,
and a broadcast rendered once per language however many plain members read it."""

from __future__ import annotations

import pytest
from tornado.locale import Locale

from server.i18n import locale_for
from server.realtime import plain
from server.realtime.frames import text_frame
from server.realtime.hub import encode
from server.realtime.plain import PlainFrames, plain_frames, plain_lines

ZH = locale_for("zh_CN")
EN = locale_for("en_US")
HOSTILE = "<img src=x onerror=alert(1)>"


def lines(payload: str, language: str = "zh_CN") -> list[str]:
    """What a plain reader in ``language`` sees for ``payload``."""
    return list(plain_lines(payload, locale_for(language)))


def message(user: str, text: str, id: int = 1) -> dict[str, object]:
    """A message's fields as frames carry them."""
    return {"user": user, "text": text, "ts": 1714550400.0, "id": id}


def test_the_seeds_lines_in_chinese() -> None:
    assert lines(encode("join", "lobby", user="alice", ts=1.0)) == ["alice 进入聊天室"]
    assert lines(encode("message", "lobby", **message("alice", "hello"))) == ["alice 说: hello"]
    assert lines(encode("leave", "lobby", user="alice", ts=2.0)) == ["alice 离开聊天室"]


def test_english_readers_get_english_lines() -> None:
    assert lines(encode("join", "lobby", user="bob", ts=1.0), "en_US") == [
        "bob joined the chat room"
    ]
    assert lines(encode("message", "lobby", **message("bob", "hi")), "en_US") == ["bob says: hi"]
    assert lines(encode("leave", "lobby", user="bob", ts=2.0), "en_US") == [
        "bob left the chat room"
    ]


def test_history_is_one_line_per_message_oldest_first() -> None:
    history = encode(
        "history",
        "lobby",
        messages=[message("alice", "one", 1), message("bob", "two", 2)],
        recovered=True,
    )
    assert lines(history) == ["alice 说: one", "bob 说: two"]
    assert lines(encode("history", "lobby", messages=[], recovered=True)) == []


def test_presence_and_unknown_frames_show_nothing() -> None:
    assert lines(encode("presence", "lobby", users=["alice", "bob"])) == []
    assert lines(encode("queue", "support-queue", threads=[])) == []
    assert lines("not json") == []
    assert lines("[1, 2]") == []


def test_an_error_is_its_sentence_on_one_line() -> None:
    error = encode("error", "lobby", code="empty", text="消息为空", ts=1.0)
    assert lines(error) == ["消息为空"]


def test_names_and_text_are_html_escaped_for_the_seeds_inner_html() -> None:
    said = encode("message", "lobby", **message("a&b", HOSTILE))
    assert lines(said) == ["a&amp;b 说: &lt;img src=x onerror=alert(1)&gt;"]
    joined = encode("join", "lobby", user="<b>", ts=1.0)
    assert lines(joined) == ["&lt;b&gt; 进入聊天室"]
    quoted = encode("message", "lobby", **message("ann", '"it\'s" {user}'))
    assert lines(quoted) == ['ann 说: "it\'s" {user}']


def test_the_frames_are_one_text_frame_per_line() -> None:
    history = encode(
        "history", "lobby", messages=[message("a", "1", 1), message("b", "2", 2)], recovered=True
    )
    expected = text_frame("a 说: 1".encode()) + text_frame("b 说: 2".encode())
    assert plain_frames(history, ZH) == expected
    assert plain_frames(encode("presence", "lobby", users=[]), ZH) == b""


def test_a_broadcast_is_rendered_once_per_language(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    render = plain.plain_frames

    def counting(payload: str, locale: Locale) -> bytes:
        rendered.append(locale.code)
        return render(payload, locale)

    monkeypatch.setattr(plain, "plain_frames", counting)
    memo = PlainFrames()
    payload = encode("message", "lobby", **message("alice", "hello"))

    chinese = [memo(payload, ZH) for _ in range(3)]
    english = [memo(payload, EN) for _ in range(2)]
    assert memo(payload, ZH) is chinese[0]
    assert all(frames is chinese[0] for frames in chinese)
    assert all(frames is english[0] for frames in english)
    assert chinese[0] == text_frame("alice 说: hello".encode())
    assert english[0] == text_frame(b"alice says: hello")
    assert rendered == ["zh_CN", "en_US"]

    # Another string is another broadcast, even when equal: rendered afresh.
    again = "".join([payload[:5], payload[5:]])
    assert memo(again, ZH) == chinese[0]
    assert rendered == ["zh_CN", "en_US", "zh_CN"]

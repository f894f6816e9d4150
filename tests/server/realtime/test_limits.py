"""The chat's shared limits: the token bucket, room names, and that both transports use them."""

from __future__ import annotations

import ast
import inspect

import pytest

from server.realtime import limits, tcp, websocket
from server.realtime.limits import ROOM_PATTERN, TokenBucket


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(10.0, 20, clock=lambda: now[0])

    assert all(bucket.take() for _ in range(20))
    assert not bucket.take()
    now[0] += 0.1
    assert bucket.take()
    assert not bucket.take()
    now[0] += 100.0
    assert sum(bucket.take() for _ in range(30)) == 20


@pytest.mark.parametrize("room", ["lobby", "salle-2", "a.b_c", "聊天室", "x" * 64])
def test_room_names_of_letters_digits_dots_dashes_and_underscores_are_accepted(room: str) -> None:
    assert ROOM_PATTERN.match(room)


@pytest.mark.parametrize("room", ["", "x" * 65, "a b", "a/b", "lobby\n", "<script>", "a:b"])
def test_other_room_names_are_refused(room: str) -> None:
    assert not ROOM_PATTERN.match(room)


def test_tcp_and_websocket_enforce_the_same_limit_objects() -> None:
    shared = ("MAX_TEXT_CHARS", "RATE_PER_SECOND", "RATE_BURST", "REFUSALS_BEFORE_CLOSE")
    for name in (*shared, "ROOM_PATTERN", "TokenBucket"):
        assert getattr(tcp, name) is getattr(limits, name) is getattr(websocket, name), name


def test_the_tcp_chat_does_not_depend_on_the_websocket_module() -> None:
    tree = ast.parse(inspect.getsource(tcp))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "server.realtime.limits" in imported
    assert "server.realtime.websocket" not in imported

"""Bearer tokens: random and URL-safe, stored as SHA-256, parsed from ``Authorization``."""

from __future__ import annotations

import hashlib
import re

import pytest

from server.security.tokens import bearer_token, hash_token, new_token


def test_a_new_token_is_43_url_safe_characters() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", new_token())


def test_new_tokens_are_distinct() -> None:
    assert len({new_token() for _ in range(1000)}) == 1000


def test_a_token_is_stored_as_its_sha256_hex_digest() -> None:
    token = new_token()
    assert hash_token(token) == hashlib.sha256(token.encode("ascii")).hexdigest()
    assert hash_token("abc") == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


@pytest.mark.parametrize(
    "header",
    ["Bearer abc123", "bearer abc123", "BEARER abc123", "  Bearer   abc123  "],
)
def test_the_bearer_scheme_is_read_whatever_its_case_and_spacing(header: str) -> None:
    assert bearer_token(header) == "abc123"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer    "])
def test_a_header_without_a_token_gives_none(header: str | None) -> None:
    assert bearer_token(header) is None


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Token abc123", "Bearerabc123"])
def test_other_schemes_give_none(header: str) -> None:
    assert bearer_token(header) is None


def test_a_token_of_512_characters_is_accepted_and_one_longer_is_not() -> None:
    assert bearer_token("Bearer " + "a" * 512) == "a" * 512
    assert bearer_token("Bearer " + "a" * 513) is None

"""The local-target check shared by ``/redirect`` and the ``next`` of ``/login``."""

from __future__ import annotations

import pytest

from server.local_paths import MAX_TARGET, local_or_home, local_target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/p",
        "/\t/evil.example/p",
        "/\r\nSet-Cookie: x=1",
        "/\n/evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        "/ /evil.example",
        "/\x00",
        "/\x7f",
        "",
        "/" + "a" * MAX_TARGET,
    ],
)
def test_targets_that_could_leave_the_site_are_refused(target: str) -> None:
    assert local_target(target) is None
    assert local_or_home(target) == "/"


def test_a_missing_target_falls_back_to_home() -> None:
    assert local_or_home(None) == "/"


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/", "/"),
        ("/orders?page=2#top", "/orders?page=2#top"),
        ("/admin/users?q=a%20b", "/admin/users?q=a%20b"),
        ("/城市", "/%E5%9F%8E%E5%B8%82"),
    ],
)
def test_local_paths_are_kept_with_non_ascii_percent_encoded(target: str, location: str) -> None:
    assert local_target(target) == location
    assert local_or_home(target) == location

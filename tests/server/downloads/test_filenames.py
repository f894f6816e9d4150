"""File names: hostile names are reduced to safe basenames, and nothing is ever overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.downloads.filenames import (
    MAX_NAME_BYTES,
    choose_name,
    move_into_place,
    name_from_url,
    safe_basename,
    unused_name,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\x", "x"),
        ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
        ("/abs/path/file.txt", "file.txt"),
        ("C:\\Users\\me\\a.txt", "a.txt"),
        ("evil\x00.txt", "evil.txt"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("bidi\u202etxt.exe", "biditxt.exe"),
        (".hidden", "hidden"),
        ("...dots", "dots"),
        ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("trailing. ", "trailing"),
        ("名字.txt", "名字.txt"),
    ],
)
def test_hostile_names_are_reduced_to_a_safe_basename(raw: str, expected: str) -> None:
    assert safe_basename(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "..", "../", "/", "\\", "\x00", "../..", " . "])
def test_names_with_nothing_usable_left_are_rejected(raw: str) -> None:
    assert safe_basename(raw) is None


def test_very_long_names_are_cut_keeping_the_extension() -> None:
    name = safe_basename("a" * 5000 + ".tar")
    assert name is not None
    assert name.endswith(".tar")
    assert len(name.encode()) == MAX_NAME_BYTES


def test_long_multibyte_names_are_cut_on_a_character_boundary() -> None:
    name = safe_basename("字" * 1000)
    assert name is not None
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert set(name) == {"字"}


def test_the_name_comes_from_the_request_then_the_url_then_a_default() -> None:
    assert choose_name("mine.bin", "http://host/theirs.bin") == "mine.bin"
    assert choose_name("../", "http://host/dir/theirs%20file.bin?q=1") == "theirs file.bin"
    assert choose_name(None, "http://host/") == "download"
    assert name_from_url("http://host/a/..%2F..%2Fetc%2Fpasswd") == "passwd"


def test_an_existing_or_reserved_name_gets_a_suffix(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"keep")
    assert unused_name(tmp_path, "f.txt", taken={"f-1.txt"}) == "f-2.txt"
    assert unused_name(tmp_path, "g", taken=set()) == "g"


def test_moving_into_place_never_replaces_a_file(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"keep")
    temporary = tmp_path / ".part-1"
    temporary.write_bytes(b"new")
    assert move_into_place(temporary, tmp_path, "f.txt", taken=set()) == "f-1.txt"
    assert (tmp_path / "f.txt").read_bytes() == b"keep"
    assert (tmp_path / "f-1.txt").read_bytes() == b"new"
    assert not temporary.exists()

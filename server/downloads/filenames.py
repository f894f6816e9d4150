"""Download file names: whatever is asked for becomes a safe basename in the downloads directory.

A name is reduced, never trusted: control and format characters (NUL included) are dropped, both
``/`` and ``\\`` count as separators and only the last part is kept, leading dots are removed (no
hidden files, no ``.``/``..``), characters Windows forbids become ``_``, device names are prefixed,
and the result is cut to ``MAX_NAME_BYTES`` of UTF-8 keeping the extension. An existing file is
never overwritten: the name gets ``-1``, ``-2``, ... before its extension, and the final move is a
hard link, which fails rather than replace a file another process just saved.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Container, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_NAME_BYTES = 200
MAX_SUFFIX_CHARS = 16
DEFAULT_NAME = "download"
FORBIDDEN_CHARS = frozenset('<>:"|?*')
DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{digit}" for digit in range(10)}
    | {f"lpt{digit}" for digit in range(10)}
)


def safe_basename(raw: str) -> str | None:
    """``raw`` reduced to a harmless basename, or None when nothing usable is left."""
    text = unicodedata.normalize("NFC", raw)
    text = "".join(char for char in text if not unicodedata.category(char).startswith("C"))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join("_" if char in FORBIDDEN_CHARS else char for char in text)
    text = text.strip().lstrip(".").rstrip(". ")
    if not text:
        return None
    if text.split(".", 1)[0].lower() in DEVICE_NAMES:
        text = "_" + text
    return _truncate(text, MAX_NAME_BYTES)


def name_from_url(url: str) -> str | None:
    """The safe basename of the URL's last path segment, or None."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return safe_basename(unquote(path.rsplit("/", 1)[-1]))


def choose_name(requested: str | None, url: str) -> str:
    """The requested name made safe, else the URL's, else ``download``."""
    return (safe_basename(requested) if requested else None) or name_from_url(url) or DEFAULT_NAME


def candidates(name: str) -> Iterator[str]:
    """``name``, then ``stem-1.ext``, ``stem-2.ext``, ..."""
    yield name
    stem, suffix = _split_suffix(name)
    number = 1
    while True:
        yield f"{stem}-{number}{suffix}"
        number += 1


def unused_name(directory: Path, name: str, taken: Container[str]) -> str:
    """The first candidate of ``name`` neither in ``taken`` nor on disk (blocking: a stat)."""
    for candidate in candidates(name):
        if candidate not in taken and not (directory / candidate).exists():
            return candidate
    raise AssertionError("unreachable: candidates() never ends")


def move_into_place(temporary: Path, directory: Path, name: str, taken: Container[str]) -> str:
    """Move ``temporary`` to ``directory`` under the first free candidate of ``name`` and return
    that name (blocking). A hard link is atomic and fails if the name exists, so a file saved
    meanwhile, by this process or another, is never replaced."""
    for candidate in candidates(name):
        if candidate in taken:
            continue
        try:
            os.link(temporary, directory / candidate)
        except FileExistsError:
            continue
        os.unlink(temporary)
        return candidate
    raise AssertionError("unreachable: candidates() never ends")


def _split_suffix(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) >= MAX_SUFFIX_CHARS:
        return name, ""
    return stem, "." + extension


def _truncate(name: str, limit: int) -> str:
    """Cut ``name`` to ``limit`` UTF-8 bytes, keeping a short extension."""
    if len(name.encode()) <= limit:
        return name
    stem, suffix = _split_suffix(name)
    room = limit - len(suffix.encode())
    stem = stem.encode()[:room].decode("utf-8", "ignore").rstrip(". ")
    return (stem or DEFAULT_NAME) + suffix

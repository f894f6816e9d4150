"""The languages the service speaks, and choosing one from what a reader asks for."""

from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType
from typing import Final

DEFAULT_LANGUAGE: Final = "zh_CN"
LANGUAGES: Final = MappingProxyType({"zh_CN": "中文", "en_US": "English"})
"""Each language's code and its own name (a switch names a language in that language)."""

_BY_PRIMARY: Final = {code.split("_")[0]: code for code in LANGUAGES}


def supported(code: str | None) -> str | None:
    """``code`` as one of ``LANGUAGES`` (``en``, ``en-GB``, ``zh-Hans-CN`` all match), or None."""
    if not code:
        return None
    primary = code.replace("-", "_").split("_")[0].lower()
    return _BY_PRIMARY.get(primary)


@lru_cache(maxsize=256)  # browsers send the same few headers on every request
def negotiate(accept_language: str | None) -> str | None:
    """The best supported language of an ``Accept-Language`` header (RFC 9110 §12.5.4), or
    None when it names none of ours. Ranges are tried by weight, ties in header order."""
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language.split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight > 0:
            ranked.append((-weight, position, tag.strip()))
    for _weight, _position, tag in sorted(ranked):
        language = supported(tag)
        if language is not None:
            return language
    return None

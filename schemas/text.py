"""``Text``: a sentence for a person, kept in its source (English) form until the edge knows
the reader's language.

Code that has no request in hand (repositories, services, validators) raises and returns
``Text("menu {id} does not exist", id=7)``; the HTTP handler, socket or TCP session translates
it with the reader's locale (``server.i18n``). ``str(text)`` is the English sentence, for logs
and for programs that never translate. The message id is the first argument, written as a
literal, so ``make messages`` finds it; placeholders use ``str.format`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

Translate = Callable[[str, str | None, int | None], str]
"""``tornado.locale.Locale.translate``'s shape: message, plural message, count."""

EMPTY: Mapping[str, Any] = MappingProxyType({})


class Text:
    """A translatable sentence with its parameters (and, for plurals, the count)."""

    __slots__ = ("count", "msgid", "params", "plural")

    def __init__(self, msgid: str, /, **params: Any) -> None:
        self.msgid = msgid
        self.plural: str | None = None
        self.count: int | None = None
        self.params: Mapping[str, Any] = MappingProxyType(params) if params else EMPTY

    def translate(self, translate: Translate) -> str:
        """The sentence in the language of ``translate``, parameters filled in (parameters
        that are themselves ``Text`` or ``Joined`` are translated too)."""
        params = {
            name: value.translate(translate) if isinstance(value, Text | Joined) else value
            for name, value in self.params.items()
        }
        return _fill(translate(self.msgid, self.plural, self.count), params)

    def __str__(self) -> str:
        source = self.msgid if self.plural is None or self.count == 1 else self.plural
        return _fill(source, self.params)

    def __repr__(self) -> str:
        return f"Text({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Text):
            return NotImplemented
        return (self.msgid, self.plural, self.count, dict(self.params)) == (
            other.msgid,
            other.plural,
            other.count,
            dict(other.params),
        )

    def __hash__(self) -> int:
        return hash((self.msgid, self.plural, self.count))


class Joined:
    """Several sentences shown as one, each translated (``"; "`` between them)."""

    __slots__ = ("parts",)

    def __init__(self, parts: Sequence[Text | str]) -> None:
        self.parts = tuple(parts)

    def translate(self, translate: Translate) -> str:
        """Each part in the language of ``translate``, joined."""
        return "; ".join(
            part.translate(translate) if isinstance(part, Text) else part for part in self.parts
        )

    def __str__(self) -> str:
        return "; ".join(str(part) for part in self.parts)


def ntext(singular: str, plural: str, count: int, /, **params: Any) -> Text:
    """A sentence with a singular and a plural form, chosen by ``count`` (also a parameter)."""
    text = Text(singular, **{**params, "count": count})
    text.plural = plural
    text.count = count
    return text


def _fill(template: str, params: Mapping[str, Any]) -> str:
    if not params:
        return template
    try:
        return template.format_map(params)
    except (KeyError, IndexError, ValueError):
        # A translation that names a placeholder the source does not have must not turn a
        # message into a 500; the catalog test catches it before it ships.
        return template

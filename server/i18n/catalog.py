"""The compiled catalogs at run time: loading them into ``tornado.locale``, translating a
``Text``, and the texts the browser scripts need.

``tornado.locale`` keeps its catalogs in module state; ``load_catalogs`` fills it once per
process (``make_app`` calls it) and is idempotent, so tests and several apps share it safely.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Final

import tornado.locale

from schemas.text import Text
from server import resources
from server.i18n.languages import DEFAULT_LANGUAGE, LANGUAGES

CATALOG_DIR: Final = resources.CATALOG_DIR
"""``<language>/LC_MESSAGES/mservices.po`` and ``.mo``: in the ``server`` package, checkout or
wheel."""
DOMAIN: Final = "mservices"
SCRIPT_MESSAGES: Final = CATALOG_DIR / "script-messages.json"
"""The message ids used by ``static/js`` (written by ``make messages``); pages hand their
translations to the scripts."""


@cache
def load_catalogs() -> None:
    """Load every compiled catalog and make Chinese the default (once per process)."""
    tornado.locale.set_default_locale(DEFAULT_LANGUAGE)
    tornado.locale.load_gettext_translations(str(CATALOG_DIR), DOMAIN)


def locale_for(language: str) -> tornado.locale.Locale:
    """The Tornado locale of one of ``LANGUAGES``."""
    load_catalogs()
    return tornado.locale.Locale.get(language if language in LANGUAGES else DEFAULT_LANGUAGE)


def translate(locale: tornado.locale.Locale, message: Text | str) -> str:
    """``message`` in ``locale``'s language; a plain ``str`` is data (a name, a title as
    typed) and is returned unchanged."""
    if isinstance(message, Text):
        return message.translate(locale.translate)
    return message


@cache
def script_texts(language: str) -> str:
    """The scripts' messages in ``language`` as a JSON object (message id to translation),
    safe to place inside a ``<script type="application/json">`` element."""
    locale = locale_for(language)
    ids: list[str] = json.loads(SCRIPT_MESSAGES.read_text(encoding="utf-8"))
    texts = {msgid: locale.translate(msgid) for msgid in ids}
    return json.dumps(texts, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")

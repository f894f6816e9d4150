"""Languages: which ones the service speaks, how a reader's is chosen, and the catalogs.

Source strings are English (the message ids); ``zh_CN`` (the default, as in the seed) and
``en_US`` are catalogs under ``server/locale``, loaded into ``tornado.locale``. ``make messages``
re-extracts them (``server.i18n.messages``); README "Adding a string or a language" explains.
"""

from server.i18n.catalog import load_catalogs, locale_for, script_texts, translate
from server.i18n.languages import DEFAULT_LANGUAGE, LANGUAGES, negotiate, supported

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "load_catalogs",
    "locale_for",
    "negotiate",
    "script_texts",
    "supported",
    "translate",
]

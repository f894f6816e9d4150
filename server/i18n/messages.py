"""Keeping the catalogs in step with the code (a development tool: it needs Babel, which only
the ``dev`` extra installs).

``python -m server.i18n.messages update`` (``make messages``) extracts every message id from
the Python sources (``Text(...)``, ``ntext(...)``), the templates (``_(...)``, ``Text(...)``
inside ``{{ }}`` and ``{% %}``) and the scripts (``_(...)`` in ``static/js``), merges them into
each language's ``.po`` (English is filled with the source text; Chinese keeps its
translations, and new or changed ids wait, empty or fuzzy, for a translator), then compiles the
``.mo`` files and lists the scripts' ids. ``check`` reports what is missing or stale;
``tests/server/i18n/test_catalogs.py`` fails on the same report.

``update --translations FILE.json`` also fills Chinese translations from ``{"id": "译文"}``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import re
import string
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final

from babel.messages import extract
from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po

from server.i18n.catalog import DOMAIN, SCRIPT_MESSAGES
from server.i18n.languages import DEFAULT_LANGUAGE, LANGUAGES
from server.resources import CATALOG_DIR

ROOT: Final = CATALOG_DIR.parent.parent
PYTHON_SOURCES: Final = ("server", "schemas", "repositories")
TEMPLATES: Final = "templates"
SCRIPTS: Final = "static/js"
SOURCE_LANGUAGE: Final = "en_US"
PYTHON_KEYWORDS: Final[Mapping[str, Any]] = {"Text": (1,), "ntext": (1, 2)}
TEMPLATE_KEYWORDS: Final[Mapping[str, Any]] = {
    "_": {1: (1,), 3: (1, 2)},  # _(message) or _(singular, plural, count)
    "Text": (1,),
    "ntext": (1, 2),
}
SCRIPT_KEYWORDS: Final[Mapping[str, Any]] = {"_": (1,)}
TEMPLATE_CODE: Final = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)

MessageId = str | tuple[str, ...] | list[str]
Location = tuple[str, int]


def extract_tornado(
    fileobj: IO[bytes], keywords: Mapping[str, Any], comment_tags: Collection[str], options: Any
) -> Iterator[tuple[Any, ...]]:
    """Babel extraction method for Tornado templates: the Python inside ``{{ }}`` and
    ``{% %}`` is handed to Babel's Python extractor, line numbers kept."""
    source = fileobj.read().decode("utf-8")
    for match in TEMPLATE_CODE.finditer(source):
        code = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
        line = source.count("\n", 0, match.start()) + 1
        chunk = io.BytesIO(code.encode("utf-8"))
        for lineno, funcname, message, comments in extract.extract_python(
            chunk, keywords, comment_tags, options
        ):
            yield line + lineno - 1, funcname, message, comments


def _files(folder: str, suffixes: tuple[str, ...]) -> Iterator[Path]:
    for path in sorted((ROOT / folder).rglob("*")):
        if path.suffix in suffixes and path.is_file() and "locale" not in path.parts:
            yield path


def _extract(
    path: Path, method: Any, keywords: Mapping[str, Any]
) -> Iterator[tuple[MessageId, Location]]:
    with path.open("rb") as handle:
        for lineno, message, _comments, _context in extract.extract(
            method, handle, keywords=keywords, options={"encoding": "utf-8"}
        ):
            yield message, (path.relative_to(ROOT).as_posix(), lineno)


def extracted() -> Catalog:
    """Every message id in the code, with where it is used (the template catalog)."""
    template = Catalog(domain=DOMAIN, project="mservices", charset="utf-8", fuzzy=False)
    found: list[tuple[MessageId, Location]] = []
    for folder in PYTHON_SOURCES:
        for path in _files(folder, (".py",)):
            found.extend(_extract(path, "python", PYTHON_KEYWORDS))
    for path in _files(TEMPLATES, (".html",)):
        found.extend(_extract(path, extract_tornado, TEMPLATE_KEYWORDS))
    for path in _files(SCRIPTS, (".js",)):
        found.extend(_extract(path, "javascript", SCRIPT_KEYWORDS))
    for message, location in found:
        existing = template.get(message)
        if existing is not None:
            existing.locations.append(location)
        else:
            template.add(message, locations=[location])
    return template


def po_path(language: str) -> Path:
    """Where ``language``'s editable catalog lives."""
    return CATALOG_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalog(language: str) -> Catalog:
    """``language``'s catalog as committed (empty when it does not exist yet)."""
    path = po_path(language)
    if not path.exists():
        return Catalog(locale=language, domain=DOMAIN, charset="utf-8", fuzzy=False)
    with path.open("rb") as handle:
        return read_po(handle, locale=language, domain=DOMAIN)


def update(translations: Mapping[str, str]) -> None:
    """Merge the extracted ids into every catalog, compile them, list the scripts' ids."""
    template = extracted()
    for language in LANGUAGES:
        catalog = read_catalog(language)
        # Babel's update adopts the template's own Message objects (and sets their strings), so
        # each language merges a copy: otherwise a new id would carry one language's
        # translation into the next catalog.
        catalog.update(
            copy.deepcopy(template), update_header_comment=False, update_creation_date=False
        )
        catalog.obsolete.clear()
        for message in catalog:
            if not message.id:
                continue
            if language == SOURCE_LANGUAGE:
                # English is the source: its catalog always says exactly the id.
                message.string = message.id
                message.flags.discard("fuzzy")
            elif language == DEFAULT_LANGUAGE and _key(message.id) in translations:
                translation = translations[_key(message.id)]
                plural = isinstance(message.id, tuple)
                message.string = (translation,) * catalog.num_plurals if plural else translation
                message.flags.discard("fuzzy")
        catalog.fuzzy = False
        catalog.project, catalog.version = "mservices", ""
        catalog.copyright_holder = "the mservices authors"
        catalog.msgid_bugs_address = ""
        catalog.last_translator = "the mservices authors"
        catalog.language_team = LANGUAGES[language]
        path = po_path(language)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            write_po(handle, catalog, width=100, sort_output=True, include_lineno=False)
        with path.with_suffix(".mo").open("wb") as handle:
            write_mo(handle, catalog)
    scripts = sorted(
        {
            _key(message.id)
            for message in template
            if message.id and any(where.startswith(SCRIPTS) for where, _ in message.locations)
        }
    )
    SCRIPT_MESSAGES.write_text(json.dumps(scripts, ensure_ascii=False, indent=0) + "\n", "utf-8")


def problems(template: Catalog | None = None) -> list[str]:
    """Everything that keeps the catalogs from matching the code (or ``template``, the ids
    extracted from it); empty when they do."""
    found: list[str] = []
    template = extracted() if template is None else template
    wanted = {_key(message.id) for message in template if message.id}
    for language in LANGUAGES:
        catalog = read_catalog(language)
        have = {_key(message.id): message for message in catalog if message.id}
        found += [f"{language}: not in the catalog: {key!r}" for key in sorted(wanted - set(have))]
        found += [f"{language}: no longer used: {key!r}" for key in sorted(set(have) - wanted)]
        for key, message in sorted(have.items()):
            if not _translated(message) or message.fuzzy:
                found.append(f"{language}: untranslated or fuzzy: {key!r}")
            elif _placeholders(message.id) != _placeholders(message.string):
                found.append(f"{language}: placeholders differ: {key!r}")
        mo = po_path(language).with_suffix(".mo")
        if not mo.exists():
            found.append(f"{language}: {mo.name} is missing; run `make messages`")
            continue
        with mo.open("rb") as handle:
            # read_mo gives a plural's forms as a list, read_po as a tuple.
            compiled = {
                _key(m.id): tuple(m.string) if isinstance(m.string, list) else m.string
                for m in read_mo(handle)
                if m.id
            }
        translated = {
            key: message.string
            for key, message in have.items()
            if _translated(message) and not message.fuzzy
        }
        if compiled != translated:
            found.append(f"{language}: {mo.name} is out of date; run `make messages`")
    if SCRIPT_MESSAGES.exists():
        listed = set(json.loads(SCRIPT_MESSAGES.read_text("utf-8")))
        scripts = {
            _key(message.id)
            for message in template
            if message.id and any(where.startswith(SCRIPTS) for where, _ in message.locations)
        }
        if listed != scripts:
            found.append(f"{SCRIPT_MESSAGES.name} is out of date; run `make messages`")
    else:
        found.append(f"{SCRIPT_MESSAGES.name} is missing; run `make messages`")
    return found


def _key(message_id: MessageId) -> str:
    return message_id if isinstance(message_id, str) else message_id[0]


def _translated(message: Message) -> bool:
    strings = message.string if isinstance(message.string, tuple) else (message.string,)
    return bool(strings) and all(strings)


def _placeholders(value: MessageId | None) -> set[str]:
    """The ``{names}`` used by any form of a message (a plural's forms may differ)."""
    forms: tuple[str, ...] = (value,) if isinstance(value, str) else tuple(value or ())
    return {
        field
        for form in forms
        for _text, field, _spec, _conversion in string.Formatter().parse(form)
        if field
    }


def main(argv: list[str] | None = None) -> int:
    """``update [--translations FILE ...]`` or ``check``."""
    parser = argparse.ArgumentParser(prog="python -m server.i18n.messages")
    parser.add_argument("command", choices=("update", "check"))
    parser.add_argument("--translations", nargs="*", default=[], type=Path)
    arguments = parser.parse_args(argv)
    if arguments.command == "update":
        translations: dict[str, str] = {}
        for path in arguments.translations:
            translations.update(json.loads(path.read_text("utf-8")))
        update(translations)
    report = problems()
    for line in report:
        print(line, file=sys.stderr)
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())

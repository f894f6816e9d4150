"""The catalogs match the code: every string a person reads has a Chinese translation, English
is complete, placeholders agree, and the compiled catalogs are current (``make messages``)."""

from __future__ import annotations

import io

from babel.messages import extract

from server.i18n import locale_for, script_texts
from server.i18n.messages import TEMPLATE_KEYWORDS, extract_tornado, extracted, problems


def test_every_string_in_the_code_is_in_every_catalog_translated_and_compiled() -> None:
    report = problems()
    assert not report, "run `make messages` and translate:\n" + "\n".join(report)


def test_a_new_string_missing_from_the_catalogs_is_reported() -> None:
    template = extracted()
    template.add("A sentence nobody translated yet", locations=[("templates/new.html", 1)])

    report = problems(template)

    assert "zh_CN: not in the catalog: 'A sentence nobody translated yet'" in report
    assert "en_US: not in the catalog: 'A sentence nobody translated yet'" in report


def test_a_string_the_code_no_longer_uses_is_reported() -> None:
    template = extracted()
    used = next(message for message in template if message.id == "Switch language")
    template.delete(used.id)

    assert "zh_CN: no longer used: 'Switch language'" in problems(template)


def test_template_strings_are_found_inside_expressions_and_statements() -> None:
    source = (
        b'<h1>{{ _("Orders") }}</h1>\n'
        b'{% if x %}\n<p>{{ _("one order", "{count} orders", n).format(count=n) }}</p>{% end %}\n'
        b'{% set reason = Text("why") %}'
    )
    found = [
        (line, message)
        for line, message, _comments, _context in extract.extract(
            extract_tornado, io.BytesIO(source), keywords=TEMPLATE_KEYWORDS
        )
    ]
    assert found == [(1, "Orders"), (3, ("one order", "{count} orders")), (4, "why")]


def test_chinese_is_the_translation_and_english_the_source() -> None:
    assert locale_for("zh_CN").translate("Switch language") == "切换语言"
    assert locale_for("en_US").translate("Switch language") == "Switch language"
    assert locale_for("fr_FR").code == "zh_CN"


def test_the_scripts_get_their_texts_as_json_safe_inside_a_script_element() -> None:
    texts = script_texts("zh_CN")
    assert "</" not in texts
    assert texts.startswith("{")

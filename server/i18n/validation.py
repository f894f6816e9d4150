"""Pydantic's validation errors as translatable sentences.

Pydantic words its errors in English; each error also has a stable ``type`` and a ``ctx`` with
the limits involved, so the sentence is rebuilt here from those. A validator of ours raises
``ValueError(Text(...))`` and its own ``Text`` is used. A type without a sentence here reads
"this value is not valid" (the field is still named).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic_core import ErrorDetails

from schemas.text import Text, ntext

Sentence = Callable[[Mapping[str, Any]], Text]

INVALID: Final = Text("this value is not valid")

SENTENCES: Final[Mapping[str, Sentence]] = {
    "missing": lambda ctx: Text("this field is required"),
    "extra_forbidden": lambda ctx: Text("this field is not part of the request"),
    "string_type": lambda ctx: Text("must be text"),
    "string_too_short": lambda ctx: ntext(
        "must be at least {count} character",
        "must be at least {count} characters",
        _count(ctx, "min_length"),
    ),
    "string_too_long": lambda ctx: ntext(
        "must be at most {count} character",
        "must be at most {count} characters",
        _count(ctx, "max_length"),
    ),
    "string_pattern_mismatch": lambda ctx: Text("is not in the expected format"),
    "string_unicode": lambda ctx: Text("must be valid text"),
    "int_type": lambda ctx: Text("must be a whole number"),
    "int_parsing": lambda ctx: Text("must be a whole number"),
    "int_from_float": lambda ctx: Text("must be a whole number"),
    "int_parsing_size": lambda ctx: Text("this number is too large"),
    "float_type": lambda ctx: Text("must be a number"),
    "float_parsing": lambda ctx: Text("must be a number"),
    "bool_type": lambda ctx: Text("must be true or false"),
    "bool_parsing": lambda ctx: Text("must be true or false"),
    "greater_than": lambda ctx: Text("must be greater than {gt}", gt=ctx.get("gt")),
    "greater_than_equal": lambda ctx: Text("must be at least {ge}", ge=ctx.get("ge")),
    "less_than": lambda ctx: Text("must be less than {lt}", lt=ctx.get("lt")),
    "less_than_equal": lambda ctx: Text("must be at most {le}", le=ctx.get("le")),
    "too_short": lambda ctx: ntext(
        "must have at least {count} item",
        "must have at least {count} items",
        _count(ctx, "min_length"),
    ),
    "too_long": lambda ctx: ntext(
        "must have at most {count} item",
        "must have at most {count} items",
        _count(ctx, "max_length"),
    ),
    "literal_error": lambda ctx: Text("must be one of {expected}", expected=ctx.get("expected")),
    "enum": lambda ctx: Text("must be one of {expected}", expected=ctx.get("expected")),
    "list_type": lambda ctx: Text("must be a list"),
    "set_type": lambda ctx: Text("must be a list"),
    "dict_type": lambda ctx: Text("must be an object"),
    "model_type": lambda ctx: Text("must be an object"),
    "model_attributes_type": lambda ctx: Text("must be an object"),
    "json_invalid": lambda ctx: Text("is not valid JSON"),
    "json_type": lambda ctx: Text("is not valid JSON"),
    "datetime_type": lambda ctx: Text("must be a date and time (ISO 8601)"),
    "datetime_parsing": lambda ctx: Text("must be a date and time (ISO 8601)"),
    "datetime_from_date_parsing": lambda ctx: Text("must be a date and time (ISO 8601)"),
    "timezone_aware": lambda ctx: Text("must include a time zone"),
    "date_type": lambda ctx: Text("must be a date (YYYY-MM-DD)"),
    "date_parsing": lambda ctx: Text("must be a date (YYYY-MM-DD)"),
    "date_from_datetime_parsing": lambda ctx: Text("must be a date (YYYY-MM-DD)"),
    "url_type": lambda ctx: Text("must be a URL"),
    "url_parsing": lambda ctx: Text("must be a URL"),
    "url_scheme": lambda ctx: Text(
        "must be a URL starting with {schemes}", schemes=ctx.get("expected_schemes")
    ),
    "url_too_long": lambda ctx: ntext(
        "must be at most {count} character",
        "must be at most {count} characters",
        _count(ctx, "max_length"),
    ),
    "frozen_instance": lambda ctx: Text("cannot be changed"),
}


def _count(ctx: Mapping[str, Any], name: str) -> int:
    value = ctx.get(name)
    return value if isinstance(value, int) else 0


def validation_reason(detail: ErrorDetails) -> Text | str:
    """Why one field failed, as a sentence the reader's locale can translate."""
    ctx: Mapping[str, Any] = detail.get("ctx") or {}
    if detail["type"] in ("value_error", "assertion_error"):
        error = ctx.get("error")
        reason = error.args[0] if isinstance(error, Exception) and error.args else None
        if isinstance(reason, Text):
            return reason
        return INVALID
    sentence = SENTENCES.get(detail["type"])
    return sentence(ctx) if sentence is not None else INVALID

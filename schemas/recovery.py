"""Schemas of email verification and password recovery: the address, link tokens, answers.

Email addresses are normalised before they are stored or looked up (``normalise_email``):
surrounding whitespace is stripped and the **whole** address is lower-cased, the local part
included. RFC 5321 lets a server treat ``Alice`` and ``alice`` as different mailboxes, but no
mainstream provider does, and one canonical form keeps uniqueness and look-ups exact on both
backends (MariaDB compares this column with a binary collation): ``Alice@Example.com`` and
``alice@example.com`` are one address, so nobody can register a second account on a case variant,
and "forgot password" finds the account however the owner types it. Only ASCII addresses are
accepted (no internationalised mailboxes): a simple, strict pattern, at most 254 characters, 64
before the ``@``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from schemas.common import RequestSchema, Schema
from schemas.text import Text
from schemas.user import Password

MAX_EMAIL_LENGTH = 254
MAX_LOCAL_LENGTH = 64
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
EMAIL_PATTERN = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[a-z]{{2,63}}")
"""A dot-atom local part, ``@``, a host name of at least two labels ending in a letter TLD
(matched against the lower-cased address with ``fullmatch``)."""
LINK_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{20,128}$"  # noqa: S105 - a pattern, not a secret
"""What a link token looks like (``secrets.token_urlsafe``)."""
NOT_AN_EMAIL = Text("must be an email address such as name@example.com")


def normalise_email(value: str) -> str:
    """The canonical form of an address (stripped, lower-cased), or ValueError saying why not
    (its argument a ``Text``: ``email_problem`` reads it)."""
    address = value.strip().lower()
    if len(address) > MAX_EMAIL_LENGTH:
        raise ValueError(
            Text("must be at most {max_length} characters", max_length=MAX_EMAIL_LENGTH)
        )
    if not address.isascii() or EMAIL_PATTERN.fullmatch(address) is None:
        raise ValueError(NOT_AN_EMAIL)
    if len(address.partition("@")[0]) > MAX_LOCAL_LENGTH:
        raise ValueError(
            Text(
                "the part before @ must be at most {max_length} characters",
                max_length=MAX_LOCAL_LENGTH,
            )
        )
    return address


def email_problem(error: ValueError) -> Text:
    """Why ``normalise_email`` refused an address, as the ``Text`` it raised."""
    reason = error.args[0] if error.args else None
    return reason if isinstance(reason, Text) else NOT_AN_EMAIL


def _normalised(value: object) -> object:
    return normalise_email(value) if isinstance(value, str) else value


Email = Annotated[
    str,
    BeforeValidator(_normalised),
    Field(
        max_length=MAX_EMAIL_LENGTH,
        description="An ASCII email address; stored stripped and lower-cased.",
        json_schema_extra={"format": "email"},
    ),
]
"""An email address, normalised by ``normalise_email``."""

LinkToken = Annotated[str, Field(pattern=LINK_TOKEN_PATTERN)]
"""The token of a verification or reset link."""


class EmailChange(RequestSchema):
    """``PUT /user/email``: the new address (null removes it), confirmed with the current
    password."""

    email: Email | None
    pwd: Annotated[str, Field(min_length=1, max_length=128)]


class EmailVerify(RequestSchema):
    """``POST /user/email/verify``: the token of the link sent to the address."""

    token: LinkToken


class PasswordForgot(RequestSchema):
    """``POST /user/password/forgot``: the address to send a reset link to."""

    email: Email


class PasswordReset(RequestSchema):
    """``POST /user/password/reset``: the link's token and the new password."""

    token: LinkToken
    new_pwd: Password


class EmailRead(Schema):
    """The caller's address and whether it has been verified."""

    msg: Literal["success"] = "success"
    email: str | None
    email_verified: bool


RESET_MAYBE_SENT = Text("if an account has this verified address, a reset link is on its way")
"""What every reset request is told (the handler sends it in the reader's language)."""


class Accepted(Schema):
    """A request taken in whose outcome is not told (a reset link, if the address is known)."""

    msg: Literal["accepted"] = "accepted"
    detail: str = Field(
        description="The same sentence for every address, known or not, in the reader's language."
    )

"""The password policy: 8 to 128 characters, not a common password, not the name, not the old one.

No composition rules (NIST SP 800-63B): length and a deny-list stop the guessable passwords
without pushing people to ``Password1!``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from schemas.text import Text
from server.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

COMMON_PASSWORDS_FILE = Path(__file__).with_name("common-passwords.txt")


@cache
def common_passwords() -> frozenset[str]:
    """The deny-list, lower-cased (read once per process)."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().casefold() for line in lines if line and not line.startswith("#"))


def password_problems(password: str, *, name: str, old_password: str | None = None) -> list[Text]:
    """Every rule ``password`` breaks, as sentences for the client (translated at the edge);
    empty when it is acceptable."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(
            Text("must be at least {min_length} characters", min_length=MIN_PASSWORD_LENGTH)
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(
            Text("must be at most {max_length} characters", max_length=MAX_PASSWORD_LENGTH)
        )
    if password.casefold() in common_passwords():
        problems.append(Text("is one of the most common passwords; choose another"))
    if password.casefold() == name.casefold():
        problems.append(Text("must not be the account name"))
    if old_password is not None and password == old_password:
        problems.append(Text("must differ from the current password"))
    return problems

"""``/cookie`` (seed §1.3): a page that lists the request's cookies, sets one and clears one.

Forms are XSRF-protected; every value is escaped by the template. A name must be an RFC 6265
token that is not a cookie attribute's name (``Path``, ``Expires``...) and a value cookie-octets
(printable ASCII without space, ``"``, ``,``, ``;`` or ``\\``); anything else re-renders the page
with 400 and the reason. The cookies mservices manages itself
(the session, the flash message, the XSRF token) can be neither set nor cleared here, and the
HttpOnly ones are listed without their value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tornado.httputil import parse_cookie

from schemas.text import Text
from server.handlers.base import FLASH_COOKIE, SESSION_COOKIE, PageHandler
from server.handlers.echo import HIDDEN_COOKIES, wire_text

PROTECTED_COOKIES = frozenset({SESSION_COOKIE, FLASH_COOKIE, "_xsrf"})
ATTRIBUTE_NAMES = frozenset(
    {"expires", "path", "comment", "domain", "max-age", "secure", "httponly", "version", "samesite"}
)
"""Cookie attribute names (any case): Python's cookie module raises ``CookieError`` on them."""
ATTRIBUTE_RULE = Text("a cookie cannot be named like a cookie attribute (Path, Expires, Secure...)")
COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
COOKIE_VALUE = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{0,256}$")
NAME_RULE = Text(
    "a cookie name is 1 to 64 letters, digits or {characters}", characters="!#$%&'*+-.^_`|~"
)
VALUE_RULE = Text(
    "a cookie value is at most 256 printable ASCII characters without spaces, "
    'quotes ("), commas, semicolons or backslashes'
)
CHOOSE_ACTION = Text("choose set or clear")
HIDDEN_VALUE = Text("(hidden: HttpOnly)")


@dataclass(frozen=True, slots=True)
class CookieRow:
    """A cookie as the page lists it."""

    name: str
    value: str
    protected: bool


def cookie_problem(name: str, value: str | None) -> Text | None:
    """Why ``name`` (and ``value`` when setting) cannot be used here, or None."""
    if name in PROTECTED_COOKIES:
        return Text(
            "the cookie {name} is managed by mservices and cannot be changed here", name=name
        )
    if not COOKIE_NAME.match(name):
        return NAME_RULE
    if name.lower() in ATTRIBUTE_NAMES:
        return ATTRIBUTE_RULE
    if value is not None and not COOKIE_VALUE.match(value):
        return VALUE_RULE
    return None


class CookiePageHandler(PageHandler):
    """``/cookie``: GET lists the cookies; POST ``action=set`` (name, value) or ``action=clear``
    (name) changes one and comes back with a flash message."""

    def rows(self) -> list[CookieRow]:
        """The request's cookies, by name, HttpOnly values hidden."""
        rows = []
        for name, value in sorted(parse_cookie(self.request.headers.get("Cookie", "")).items()):
            shown = self.text(HIDDEN_VALUE) if name in HIDDEN_COOKIES else wire_text(value)[0]
            rows.append(CookieRow(wire_text(name)[0], shown, name in PROTECTED_COOKIES))
        return rows

    async def show(self, *, error: Text | None = None, name: str = "", value: str = "") -> None:
        """Render the page (with the reason a change was refused, if any)."""
        await self.render_page(
            "cookie.html",
            cookies=self.rows(),
            error=self.text(error) if error is not None else None,
            name=name,
            value=value,
        )

    async def get(self) -> None:
        """List the cookies."""
        await self.show()

    async def post(self) -> None:
        """Set or clear one cookie (XSRF-checked by Tornado), then back to the list."""
        action = self.get_body_argument("action", "")
        name = self.get_body_argument("name", "")
        value = self.get_body_argument("value", "") if action == "set" else None
        if action not in ("set", "clear"):
            problem: Text | None = CHOOSE_ACTION
        else:
            problem = cookie_problem(name, value)
        if problem is not None:
            self.set_status(400)
            await self.show(error=problem, name=name[:64], value=(value or "")[:256])
            return
        secure = self.request.protocol == "https"
        if value is not None:
            self.set_cookie(name, value, path="/", samesite="Lax", secure=secure)
            self.flash(Text("cookie {name} set", name=name))
        else:
            self.clear_cookie(name, path="/")
            self.flash(Text("cookie {name} cleared", name=name))
        self.redirect_to("/cookie")

"""``/redirect?to=/path`` (seed §1.5): a redirect that only ever stays on this site.

``to`` must be a local path: one leading ``/`` (not ``//``, which browsers read as another
host), no backslash anywhere (browsers treat ``/\\`` like ``//``), no control characters or
whitespace browsers strip or choke on, at most ``MAX_TARGET`` characters. Anything else is a 400
page, never a redirect elsewhere. Non-ASCII characters are percent-encoded into the Location.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from server.errors import ApiError
from server.handlers.base import PageHandler

MAX_TARGET = 2048
UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
"""Control characters, space and backslash: browsers drop or rewrite them, so ``/\\t/evil`` or
``/\\evil`` could become ``//evil``."""
LOCATION_SAFE = "/?#&=%:@!$'()*+,;~[]"


def local_target(target: str) -> str | None:
    """``target`` as a Location that stays on this site, or None when it could leave it."""
    if not target.startswith("/") or target.startswith("//"):
        return None
    if len(target) > MAX_TARGET or UNSAFE.search(target):
        return None
    return quote(target, safe=LOCATION_SAFE)


class RedirectHandler(PageHandler):
    """``GET /redirect?to=/path``: 302 to a local path; anything else is 400."""

    async def get(self) -> None:
        """Redirect to ``to`` when it is a local path."""
        targets = self.get_query_arguments("to", strip=False)
        if len(targets) != 1:
            raise ApiError(400, "bad_redirect", "give exactly one `to`, a local path like /orders")
        location = local_target(targets[0])
        if location is None:
            raise ApiError(
                400,
                "bad_redirect",
                "`to` must be a local path starting with a single / "
                "(no scheme, host, backslash or control characters)",
            )
        self.redirect(location)

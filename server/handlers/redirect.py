"""``/redirect?to=/path`` (seed §1.5): a redirect that only ever stays on this site.

``to`` must be a local path as ``server/local_paths.py`` defines it (the check ``/login``'s
``next`` shares): anything else is a 400 page, never a redirect elsewhere.
"""

from __future__ import annotations

from schemas.text import Text
from server.errors import ApiError
from server.handlers.base import PageHandler
from server.local_paths import local_target


class RedirectHandler(PageHandler):
    """``GET /redirect?to=/path``: 302 to a local path; anything else is 400."""

    async def get(self) -> None:
        """Redirect to ``to`` when it is a local path."""
        targets = self.get_query_arguments("to", strip=False)
        if len(targets) != 1:
            raise ApiError(
                400, "bad_redirect", Text("give exactly one `to`, a local path like /orders")
            )
        location = local_target(targets[0])
        if location is None:
            raise ApiError(
                400,
                "bad_redirect",
                Text(
                    "`to` must be a local path starting with a single / "
                    "(no scheme, host, backslash or control characters)"
                ),
            )
        self.redirect(location)

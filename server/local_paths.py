"""Local targets: the one check that a redirect chosen by a request stays on this site.

``/redirect?to=`` and the ``next`` of ``/login`` both use it. A target is local when it is a path
with exactly one leading ``/`` (``//host`` is another host to a browser), no backslash anywhere
(browsers treat ``/\\`` like ``//``), no control character or whitespace (browsers drop a tab,
CR or LF inside a URL, so ``/\\t/evil.example`` becomes ``//evil.example``; CR and LF would also
split the ``Location`` header), and at most ``MAX_TARGET`` characters. A scheme (``https:``,
``javascript:``) cannot pass: the target must start with ``/``. Non-ASCII characters are
percent-encoded into the Location.
"""

from __future__ import annotations

import re
from urllib.parse import quote

MAX_TARGET = 2048
UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
"""Control characters, space and backslash: browsers drop or rewrite them, so ``/\\t/evil`` or
``/\\evil`` could become ``//evil``."""
LOCATION_SAFE = "/?#&=%:@!$'()*+,;~[]"
FALLBACK = "/"
"""Where a refused target goes instead, when the caller falls back rather than refuses."""


def local_target(target: str | None) -> str | None:
    """``target`` as a Location that stays on this site, or None when it could leave it."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if len(target) > MAX_TARGET or UNSAFE.search(target):
        return None
    return quote(target, safe=LOCATION_SAFE)


def local_or_home(target: str | None) -> str:
    """``target`` as a local Location (see ``local_target``), or ``/`` when it is not one."""
    return local_target(target) or FALLBACK

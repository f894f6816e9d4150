"""The chat's shared limits: what WebSocket and TCP users may send, and how fast.

Both transports enforce the same rules, so a room behaves the same whichever way its members
connect: room names match ROOM_PATTERN, a message holds at most MAX_TEXT_CHARS characters, and
each connection has a TokenBucket of RATE_PER_SECOND messages a second with bursts of
RATE_BURST; after REFUSALS_BEFORE_CLOSE refused messages in a row the connection is closed.
Limits that only make sense for one transport (frame size, line length, queues) stay with it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

MAX_TEXT_CHARS = 2000
"""Characters per chat message."""
RATE_PER_SECOND = 10.0
"""Messages a connection may send per second, on average."""
RATE_BURST = 20
"""Messages a connection may send at once after a quiet spell."""
REFUSALS_BEFORE_CLOSE = 10
"""Rate-limited messages in a row after which the connection is closed."""

ROOM_PATTERN = re.compile(r"^[\w.-]{1,64}\Z")
"""Room names: letters (any script), digits, ``_``, ``.`` and ``-``; the column holds 64."""


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> bool:
        """Spend one token; False when none is left."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

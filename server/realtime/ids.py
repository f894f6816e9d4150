"""Message ids: time-ordered 63-bit integers that any process can mint without coordination.

Layout: milliseconds since 2026-01-01 (41 bits), a random node tag per process (10 bits) and a
per-millisecond sequence (12 bits). Ids sort by time across processes (to the clock's accuracy),
which is what history and reconnect resume need.
"""

from __future__ import annotations

import secrets
import time

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12


class MessageIds:
    """Mints increasing ids for one process."""

    def __init__(self, node: int | None = None) -> None:
        self.node = secrets.randbelow(1 << NODE_BITS) if node is None else node
        self._last_ms = 0
        self._sequence = 0

    def next(self) -> int:
        """A new id, greater than every id this instance minted before."""
        now = max(int(time.time() * 1000) - EPOCH_MS, self._last_ms)
        if now == self._last_ms:
            self._sequence += 1
            if self._sequence >= 1 << SEQUENCE_BITS:  # sequence exhausted: borrow the next ms
                now += 1
                self._sequence = 0
        else:
            self._sequence = 0
        self._last_ms = now
        return (now << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | self._sequence


def first_id_at(unix_ms: int) -> int:
    """The smallest id any process mints at the Unix time ``unix_ms`` (0 before the epoch)."""
    return max(0, unix_ms - EPOCH_MS) << (NODE_BITS + SEQUENCE_BITS)


def id_time_ms(message_id: int) -> int:
    """The Unix time in milliseconds encoded in ``message_id``."""
    return (message_id >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS

"""Cache invalidation across processes: applied locally at once, fanned out through Redis pub/sub.

A change (a revoked token, a user whose roles or status changed, a menu or grant change) is
applied to this process's caches before ``publish`` returns, so the process that made it never
serves stale data. With ``MSERVICES_REDIS_URL`` set, the same event is published on one channel
(``server/redis_channel.py``, the loop the chat bus runs too) that every process subscribes to;
a process whose subscription broke clears all of its caches when it resubscribes, because it
may have missed events.

Redis outages: a publish is tried once more when its pooled connection turns out dead (the
first command after Redis restarts), and waits at most ``PUBLISH_WAIT`` seconds. The subscriber
pings Redis on its own connection every second (``redis_channel.HEARTBEAT``); ``healthy()`` is
false while it is not subscribed, when nothing (not even a pong) has come back for
``STALE_AFTER`` seconds (a paused Redis), or after a publish failed. Caches ask ``healthy()`` to
decide how long they may trust themselves (``server.logins.LoginCache``), and when the channel
is heard again after such a gap every cache is cleared, because events may have been lost
meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from server.redis_channel import PUBLISH_ERRORS, Message, RedisChannel

log = logging.getLogger("mservices.invalidation")

CHANNEL = "mservices:invalidate"

Kind = Literal["token", "user", "menus", "roles", "all"]
KINDS = ("token", "user", "menus", "roles", "all")

STALE_AFTER = 3.0
"""Seconds without hearing from Redis after which the channel counts as unhealthy."""

PUBLISH_WAIT = 1.0
"""Seconds a publish waits for Redis (both tries together) before giving up."""


@dataclass(frozen=True, slots=True)
class Event:
    """One invalidation: ``token`` (a token hash), ``user`` (a user id), ``menus`` (menus or
    grants changed), ``roles`` (a role renamed or deleted), ``all``."""

    kind: Kind
    key: str = ""


Listener = Callable[[Event], None]


class Invalidation:
    """The local fan-out of invalidation events, plus a Redis bridge when configured."""

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        channel: str = CHANNEL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._listeners: list[Listener] = []
        self._channel: RedisChannel | None = None
        self.subscribed = asyncio.Event()
        if redis is not None:
            self._channel = RedisChannel(
                redis,
                channel,
                label="invalidation",
                log=log,
                publish_wait=PUBLISH_WAIT,
                clock=clock,
            )
            self.subscribed = self._channel.subscribed
            self._channel.on_resync(self._resubscribed)
            self._channel.on_heard(self._heard)
            self._channel.on_message(self._receive)
        self._publish_failed = False  # since the subscriber last heard from Redis

    @property
    def heard_at(self) -> float:
        """When (``clock`` time) Redis last answered the subscriber: a message or a pong."""
        return -math.inf if self._channel is None else self._channel.heard_at

    def healthy(self) -> bool:
        """True when every event published by another process reaches this one: always
        without Redis (one process); with it, while subscribed, heard from within
        ``STALE_AFTER`` seconds, and no publish has failed since."""
        return self._redis is None or self._healthy_at(self._clock())

    def _healthy_at(self, now: float) -> bool:
        return (
            self.subscribed.is_set()
            and not self._publish_failed
            and now - self.heard_at <= STALE_AFTER
        )

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` for every event, local or remote."""
        self._listeners.append(listener)

    async def publish(self, event: Event) -> None:
        """Apply ``event`` here now, then tell the other processes (best effort)."""
        self._apply(event)
        if self._channel is None:
            return
        try:
            await self._channel.publish({"kind": event.kind, "key": event.key})
        except PUBLISH_ERRORS as error:
            # The other processes may miss it, and this one may be missing theirs: distrust
            # the caches until the subscriber hears from Redis again (which clears them).
            self._publish_failed = True
            log.warning(
                "could not publish invalidation %s: %s", event, str(error) or type(error).__name__
            )

    def start(self) -> None:
        """Start the subscriber (with Redis); it reconnects with backoff until ``close``."""
        if self._channel is not None:
            self._channel.start()

    async def close(self) -> None:
        """Stop the subscriber."""
        if self._channel is not None:
            await self._channel.close()

    def _apply(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("an invalidation listener failed on %s", event)

    async def _resubscribed(self) -> None:
        """Anything published while we were not listening is lost: start clean."""
        self._apply(Event("all"))
        self._publish_failed = False

    def _heard(self, now: float) -> None:
        """Redis answered: after a gap (or a failed publish), events may have been lost."""
        if not self._healthy_at(now):
            self._apply(Event("all"))
        self._publish_failed = False

    def _receive(self, data: Message) -> None:
        kind = data["kind"]
        if kind not in KINDS:
            return
        self._apply(Event(kind, str(data.get("key", ""))))

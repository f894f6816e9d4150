"""Cache invalidation across processes: applied locally at once, fanned out through Redis pub/sub.

A change (a revoked token, a user whose roles or status changed, a menu or grant change) is
applied to this process's caches before ``publish`` returns, so the process that made it never
serves stale data. With ``MSERVICES_REDIS_URL`` set, the same event is published on one channel
that every process subscribes to; a process whose subscription broke clears all of its caches
when it resubscribes, because it may have missed events.

Redis outages: a publish is tried once more when its pooled connection turns out dead (the
first command after Redis restarts), and waits at most ``PUBLISH_WAIT`` seconds. The subscriber
pings Redis on its own connection every ``HEARTBEAT`` seconds; ``healthy()`` is false while it is
not subscribed, when nothing (not even a pong) has come back for ``STALE_AFTER`` seconds (a
paused Redis), or after a publish failed. Caches ask ``healthy()`` to decide how long they may
trust themselves (``server.logins.LoginCache``), and when the channel is heard again after such
a gap every cache is cleared, because events may have been lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.realtime.redis_bus import retried

log = logging.getLogger("mservices.invalidation")

CHANNEL = "mservices:invalidate"

Kind = Literal["token", "user", "menus", "roles", "all"]

HEARTBEAT = 1.0
"""Seconds between the subscriber's pings while nothing else arrives."""

STALE_AFTER = 3.0
"""Seconds without hearing from Redis after which the channel counts as unhealthy."""

PUBLISH_WAIT = 1.0
"""Seconds a publish waits for Redis (both tries together) before giving up."""

_PING = "mservices-invalidation-heartbeat"


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
        self._channel = channel
        self._clock = clock
        self._listeners: list[Listener] = []
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.heard_at = -math.inf
        """When (``clock`` time) Redis last answered the subscriber: a message or a pong."""
        self._publish_failed = False  # since the subscriber last heard from Redis

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
        if self._redis is None:
            return
        message = json.dumps({"origin": self._origin, "kind": event.kind, "key": event.key})
        try:
            async with asyncio.timeout(PUBLISH_WAIT):
                await retried(self._redis.publish, self._channel, message)
        except (RedisError, OSError, TimeoutError) as error:
            # The other processes may miss it, and this one may be missing theirs: distrust
            # the caches until the subscriber hears from Redis again (which clears them).
            self._publish_failed = True
            log.warning(
                "could not publish invalidation %s: %s", event, str(error) or type(error).__name__
            )

    def start(self) -> None:
        """Start the subscriber (with Redis); it reconnects with backoff until ``close``."""
        if self._redis is not None and self._task is None:
            self._task = asyncio.ensure_future(self._subscribe_forever(self._redis))

    async def close(self) -> None:
        """Stop the subscriber."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.subscribed.clear()

    def _apply(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("an invalidation listener failed on %s", event)

    async def _subscribe_forever(self, redis: Redis) -> None:
        delay = 0.1
        while True:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    # Anything published while we were not listening is lost: start clean.
                    self._apply(Event("all"))
                    self.heard_at = pinged_at = self._clock()
                    self._publish_failed = False
                    self.subscribed.set()
                    delay = 0.1
                    while True:
                        message = await pubsub.get_message(timeout=HEARTBEAT)
                        now = self._clock()
                        if message is not None:
                            self._heard(now)
                            self._receive(message)
                        if now - pinged_at >= HEARTBEAT:
                            await pubsub.ping(_PING)
                            pinged_at = now
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                self.subscribed.clear()
                log.warning("invalidation channel lost (%s); retrying in %.1fs", error, delay)
            except Exception:
                self.subscribed.clear()
                log.exception("invalidation subscriber failed; retrying in %.1fs", delay)
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter only
            delay = min(delay * 2, 5.0)

    def _heard(self, now: float) -> None:
        """Redis answered: after a gap (or a failed publish), events may have been lost."""
        if not self._healthy_at(now):
            self._apply(Event("all"))
        self.heard_at = now
        self._publish_failed = False

    def _receive(self, message: dict[str, object]) -> None:
        if message.get("type") != "message":
            return
        try:
            raw = message["data"]
            data = json.loads(raw if isinstance(raw, str | bytes) else "")
            if data.get("origin") == self._origin:
                return
            kind = data["kind"]
            if kind not in ("token", "user", "menus", "roles", "all"):
                return
            self._apply(Event(kind, str(data.get("key", ""))))
        except Exception:  # anything a stranger can publish must not stop the subscriber
            log.warning("ignoring a malformed invalidation message")

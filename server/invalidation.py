"""Cache invalidation across processes: applied locally at once, fanned out through Redis pub/sub.

A change (a revoked token, a user whose roles or status changed, a menu or grant change) is
applied to this process's caches before ``publish`` returns, so the process that made it never
serves stale data. With ``MSERVICES_REDIS_URL`` set, the same event is published on one channel
that every process subscribes to; a process whose subscription broke clears all of its caches
when it resubscribes, because it may have missed events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("mservices.invalidation")

CHANNEL = "mservices:invalidate"

Kind = Literal["token", "user", "menus", "roles", "all"]


@dataclass(frozen=True, slots=True)
class Event:
    """One invalidation: ``token`` (a token hash), ``user`` (a user id), ``menus`` (menus or
    grants changed), ``roles`` (a role renamed or deleted), ``all``."""

    kind: Kind
    key: str = ""


Listener = Callable[[Event], None]


class Invalidation:
    """The local fan-out of invalidation events, plus a Redis bridge when configured."""

    def __init__(self, redis: Redis | None = None, *, channel: str = CHANNEL) -> None:
        self._redis = redis
        self._channel = channel
        self._listeners: list[Listener] = []
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

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
            await self._redis.publish(self._channel, message)
        except (RedisError, OSError) as error:
            log.warning("could not publish invalidation %s: %s", event, error)

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
                    self.subscribed.set()
                    delay = 0.1
                    async for message in pubsub.listen():
                        self._receive(message)
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

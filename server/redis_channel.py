"""One Redis pub/sub channel that every process subscribes to: the loop both the chat bus
(``server/realtime/redis_bus.py``) and the cache invalidation (``server/invalidation.py``) run.

``RedisChannel`` carries JSON objects stamped with this process's ``origin``; a process never
hears its own (it applied them before publishing). Its subscriber:

- reconnects with jittered exponential backoff (BACKOFF_FIRST to BACKOFF_MAX seconds), cut
  short when a publish succeeds meanwhile (Redis is back: no need to sleep on);
- on every (re)subscription awaits the ``on_resync`` callbacks in order before it reads a
  message, then sets ``subscribed``: what was published while it was away is lost, and each
  user of the channel knows how to make up for it;
- pings Redis every HEARTBEAT seconds on its own connection, whatever the traffic: a pong moves
  ``heard_at`` (so a paused Redis shows as silence) and ``confirmed_at``, the wall-clock time
  before which every message published on the channel has been received (Redis answers a PING
  after everything it published to this connection before it);
- calls ``on_lost`` when the subscription breaks.

``publish`` tries once more when its pooled connection turns out dead (``retried``) and waits at
most ``publish_wait`` seconds when given; failures are raised for the caller to handle.
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
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from server.background import cancel_and_wait

HEARTBEAT = 1.0
"""Seconds between the subscriber's pings."""

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
WAKE_GAP = 0.25
"""The least time between two subscription attempts, even when a publish wakes the subscriber."""

PUBLISH_ERRORS = (RedisError, OSError, TimeoutError)
"""What a failed publish raises (TimeoutError: ``publish_wait`` ran out)."""

Message = dict[str, Any]
"""A decoded channel message: a JSON object with the ``origin`` of its process."""
Receive = Callable[[Message], None]
Callback = Callable[[], Awaitable[None]]
"""A coroutine function awaited on every (re)subscription."""

T = TypeVar("T")

_PING = "mservices-heartbeat"


async def retried(command: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Await ``command(*args, **kwargs)``, and once more when its connection was found dropped.

    After Redis restarts or cuts this process off, every pooled connection is dead but looks
    idle; the first command on each fails (and disconnects it). Trying once more on a fresh
    connection keeps the first commands after an outage from being lost. The client itself is
    not configured to retry: its pub/sub would then reconnect silently, and the channel must see
    every resubscription to resync.
    """
    try:
        return await command(*args, **kwargs)
    except RedisConnectionError:
        return await command(*args, **kwargs)


class RedisChannel:
    """A Redis pub/sub channel of JSON objects shared by every process (see the module)."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        *,
        label: str,
        log: logging.Logger,
        origin: str | None = None,
        publish_wait: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.name = channel
        self.label = label
        """What the log calls this channel ("chat", "invalidation")."""
        self.origin = origin or uuid.uuid4().hex
        self._log = log
        self._publish_wait = publish_wait
        self._clock = clock
        self._receivers: list[Receive] = []
        self._resyncs: list[Callback] = []
        self._heard: list[Callable[[float], None]] = []
        self._lost: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pings: deque[float] = deque()
        self.subscribed = asyncio.Event()
        """Set while listening, once the resync callbacks of the subscription have run."""
        self.heard_at = -math.inf
        """When (``clock`` time) Redis last answered the subscriber: a message or a pong."""
        self.confirmed_at = -math.inf
        """Wall-clock time (``time.time()``) before which every message published on the
        channel has reached this subscriber: when the last answered ping (or the subscription)
        was sent."""

    def on_message(self, receive: Receive) -> None:
        """Call ``receive`` with every message another process publishes. A message it cannot
        handle may raise: it is logged as malformed and the subscriber carries on."""
        self._receivers.append(receive)

    def on_resync(self, callback: Callback) -> None:
        """Await ``callback`` on every (re)subscription, after the callbacks registered before
        it and before any message is read."""
        self._resyncs.append(callback)

    def on_heard(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(now)`` whenever Redis answers the subscriber, before ``heard_at``
        moves to ``now`` (so it can tell how long Redis was silent)."""
        self._heard.append(callback)

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the subscription breaks (before the backoff)."""
        self._lost.append(callback)

    async def publish(self, body: Message) -> None:
        """Publish ``body`` (a JSON object) with this process's origin; raises one of
        PUBLISH_ERRORS when Redis refuses or does not answer in time."""
        message = json.dumps({**body, "origin": self.origin}, ensure_ascii=False)
        if self._publish_wait is None:
            await retried(self.redis.publish, self.name, message)
        else:
            async with asyncio.timeout(self._publish_wait):
                await retried(self.redis.publish, self.name, message)
        if not self.subscribed.is_set():
            self._wake.set()  # Redis answers: the subscriber need not wait out its backoff

    def start(self) -> None:
        """Start the subscriber; it reconnects with backoff until ``close``."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._subscribe_forever())

    async def close(self) -> None:
        """Stop the subscriber (a second call does nothing)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self.subscribed.clear()

    async def _subscribe_forever(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                delay = BACKOFF_FIRST if self._broken() else delay
                self._log.warning(
                    "%s channel lost (%s); retrying in %.1fs", self.label, error, delay
                )
            except Exception:
                delay = BACKOFF_FIRST if self._broken() else delay
                self._log.exception("%s subscriber failed; retrying in %.1fs", self.label, delay)
            await self._backoff(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _listen(self, pubsub: Any) -> None:
        sent = time.time()
        await pubsub.subscribe(self.name)
        self.heard_at = pinged_at = self._clock()
        self.confirmed_at = sent
        self._pings.clear()
        for callback in self._resyncs:
            try:
                await callback()
            except (RedisError, OSError) as error:  # the next resubscription tries again
                self._log.warning("%s resync incomplete: %s", self.label, error)
            except Exception:
                self._log.exception("a %s resync callback failed", self.label)
        self.subscribed.set()
        self._wake.clear()
        while True:
            message = await pubsub.get_message(timeout=HEARTBEAT)
            now = self._clock()
            if message is not None:
                for heard in self._heard:
                    heard(now)
                self.heard_at = now
                self._receive(message)
            if now - pinged_at >= HEARTBEAT:
                self._pings.append(time.time())
                await pubsub.ping(_PING)
                pinged_at = now

    def _broken(self) -> bool:
        """The subscription broke (or never came up); True when it had been listening."""
        listening = self.subscribed.is_set()
        self.subscribed.clear()
        for lost in self._lost:
            try:
                lost()
            except Exception:
                self._log.exception("a %s on_lost callback failed", self.label)
        return listening

    async def _backoff(self, delay: float) -> None:
        """Sleep ``delay`` (jittered), or less when a publish shows Redis is back."""
        pause = delay * (0.5 + random.random())  # noqa: S311 - jitter only
        await asyncio.sleep(min(WAKE_GAP, pause))
        if pause > WAKE_GAP and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause - WAKE_GAP)
        self._wake.clear()

    def _receive(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "pong":
            if self._pings:
                self.confirmed_at = self._pings.popleft()
            return
        if kind != "message":
            return
        try:
            raw = message["data"]
            data = json.loads(raw if isinstance(raw, str | bytes) else "")
            if not isinstance(data, dict):
                raise TypeError("a channel message is a JSON object")
            if data.get("origin") == self.origin:
                return  # our own: applied when it was published
            for receive in self._receivers:
                receive(data)
        except Exception:  # anything a stranger can publish must not stop the subscriber
            self._log.warning("ignoring a malformed %s message", self.label)

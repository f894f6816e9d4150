"""The chat bus of several processes: one Redis channel (``server/redis_channel.py``), and no
message lost when Redis restarts.

Every frame is published once on one channel that every process subscribes to. The publishing
process hands its own frames to its hub at once (not through the Redis round trip), so a Redis
outage never stops chat between the members of one process.

What the channel carries (JSON objects, each with the ``origin`` of its process):

- ``{"room", "payload"}``: a frame for the room's members in every process;
- ``{"beat": 1}`` every BEAT seconds: this process is alive (whether or not it is subscribed);
- ``{"hello": nonce, "after": id}``: the sender has just (re)subscribed and asks every process
  for its messages after ``id`` that are not stored yet;
- ``{"to", "reply": nonce, "frames": [[room, payload], ...]}``: the answer to a hello;
- ``{"bye": 1}``: this process is closing (nobody need wait for its answer any more).

No loss, from both ends:

- **The origin keeps what it could not publish.** A frame Redis refused goes to a backlog (at
  most BACKLOG_LIMIT frames, the oldest dropped and counted) and is published again, in order
  and before any newer frame, as soon as Redis takes a publish again (the next beat, or the
  resubscription). A receiver drops a message whose id it has delivered already (``Hub``).
- **The receiver fills its gap.** The subscription is confirmed every second (``confirmed_at``:
  everything published before it has arrived). After a resubscription, frames from the channel
  are held, the process says hello, and waits (at most FILL_WAIT seconds) for an answer from
  every process it heard from in the PEER_TIMEOUT seconds before it lost the channel, plus any
  it hears from meanwhile; it says hello again to a process whose own hello shows it just
  subscribed. Each answer lists what that process has not stored yet, taken when the hello
  arrived. Only then does the hub read history (``Fill``): every message of its rooms after the
  last confirmation (less FILL_MARGIN) is in the database or in an answer. The hub delivers what
  its members have not had, in id order; then the held frames go out, and live frames resume.
  A message published after the resubscription arrives live; one published before it either
  arrived before the channel broke or is in the fill, so no member sees a gap, and per sender
  (one connection, whose messages go out one after the other from one process) the order holds.
  docs/architecture.md states the guarantee and its limits.

Every (re)subscription also runs the ``on_resync`` callbacks in order (presence writes this
process's users back, then the hub publishes who is online in each of its rooms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from server.background import cancel_and_wait
from server.realtime.bus import Deliver, Fill, Frames, Unstored
from server.realtime.ids import first_id_at
from server.redis_channel import PUBLISH_ERRORS, Callback, Message, RedisChannel

log = logging.getLogger("mservices.chat")

CHANNEL = "mservices:chat"

BEAT = 1.0
"""Seconds between this process's beats on the channel."""
PEER_TIMEOUT = 5.0
"""A process not heard from for this long before the channel was lost is not waited for."""
FILL_WAIT = 10.0
"""The longest a resubscribed process holds live frames while it waits for answers."""
FILL_MARGIN = 10.0
"""Seconds before the last confirmation the fill starts from: covers the time between minting
an id and publishing it (a publish may wait for Redis) and the clocks of the processes."""
BACKLOG_LIMIT = 10_000
"""Frames kept for publishing once Redis is back; past it the oldest are dropped."""
HELLO_RETRY = 0.5
"""Seconds between attempts to say hello when Redis refuses the publish."""
CLOSE_TIMEOUT = 1.0
"""The longest closing waits to say bye."""


@dataclass(eq=False)
class _Gather:
    """The answers to one hello."""

    nonce: str
    after: int
    expected: set[str]
    answered: set[str] = field(default_factory=set)
    frames: Frames = field(default_factory=list)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._check()

    def expect(self, origin: str) -> None:
        """Wait for ``origin`` too (unless it answered already)."""
        if origin not in self.answered:
            self.expected.add(origin)
            self._check()

    def answer(self, origin: str, frames: Frames) -> None:
        """Keep the first answer of ``origin``."""
        if origin not in self.answered:
            self.answered.add(origin)
            self.frames.extend(frames)
            self._check()

    def missing(self) -> set[str]:
        """The processes waited for that have not answered."""
        return self.expected - self.answered

    def _check(self) -> None:
        if self.missing():
            self.complete.clear()
        else:
            self.complete.set()


class RedisBus:
    """The bus of several processes: one Redis channel, local frames delivered at once, and a
    fill from history after every resubscription (see the module)."""

    def __init__(
        self,
        redis: Redis,
        *,
        channel: str = CHANNEL,
        origin: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = RedisChannel(redis, channel, label="chat", log=log, origin=origin)
        self._clock = clock
        self.origin = self._channel.origin  # frames carry it, so their echo is skipped
        self.subscribed = self._channel.subscribed
        """Set while listening, after the resync callbacks (the fill may still be running)."""
        self.synced = asyncio.Event()
        """Set once the fill of the current subscription is done and live frames flow."""
        self._subscribers: list[Deliver] = []
        self._closers: list[Callback] = []
        self._fill: Fill | None = None
        self._unstored: Unstored | None = None
        self._backlog: deque[Message] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._outage: int | None = None  # frames kept back since publishing last failed
        self.unpublished = 0
        """Frames Redis refused when they were sent (kept in the backlog)."""
        self.dropped = 0
        """Frames pushed out of a full backlog: they reached this process only."""
        self._peers: dict[str, float] = {}  # origin -> when (clock) it was last heard from
        self._floor_wall = time.time()  # everything published before this has arrived
        self._lost_at = clock()
        self._held: Frames | None = None  # frames from the channel held during a fill
        self._gather: _Gather | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel.on_resync(self._resubscribed)  # first: before presence and the hub
        self._channel.on_lost(self._lost)
        self._channel.on_message(self._receive)

    def subscribe(self, deliver: Deliver) -> None:
        """See Bus."""
        self._subscribers.append(deliver)

    def recover_with(self, fill: Fill, unstored: Unstored) -> None:
        """See Bus: ``fill`` runs after every resubscription, ``unstored`` answers hellos."""
        self._fill, self._unstored = fill, unstored

    def on_resync(self, callback: Callback) -> None:
        """Await ``callback`` each time the subscriber (re)subscribes: anything another process
        should know about this one (its presence) may have been lost meanwhile."""
        self._channel.on_resync(callback)

    def on_close(self, callback: Callback) -> None:
        """Await ``callback`` when the bus closes (a companion such as the presence heartbeat)."""
        self._closers.append(callback)

    async def publish(self, room: str, payload: str) -> None:
        """See Bus. Delivered here before anything else; what Redis refuses is kept and
        published once it is back, before any newer frame (never raised)."""
        self._deliver(room, payload)
        body: Message = {"room": room, "payload": payload}
        if self._backlog:  # behind the frames waiting for Redis, so the order holds
            self._keep(body, None)
            return
        try:
            await self._channel.publish(body)
        except PUBLISH_ERRORS as error:
            self._keep(body, error)

    async def start(self) -> None:
        """See Bus: start the subscriber, which reconnects with backoff until ``close``, and
        the beat."""
        self._channel.start()
        if self._beat_task is None:
            self._beat_task = asyncio.ensure_future(self._beat_forever())

    async def close(self) -> None:
        """See Bus: stop the subscriber and the beat, say bye, then run the ``on_close``
        callbacks. Frames still waiting for Redis are given up (and logged)."""
        subscribed = self.subscribed.is_set()
        if self._beat_task is not None:
            await cancel_and_wait(self._beat_task)
            self._beat_task = None
        await self._channel.close()  # from now on nothing starts a flusher, fill or answer
        for task in (self._flusher, self._sync_task, *self._tasks):
            if task is not None:
                await cancel_and_wait(task)
        self._flusher = self._sync_task = None
        self._tasks.clear()
        self._held = None
        self.synced.clear()
        if subscribed:
            with contextlib.suppress(*PUBLISH_ERRORS):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._channel.publish({"bye": 1})
        if self._backlog:
            log.warning("%d chat frames never reached the other processes", len(self._backlog))
            self._backlog.clear()
        closers, self._closers = self._closers, []
        for callback in closers:
            try:
                await callback()
            except Exception:
                log.exception("a chat bus companion failed to close")

    def _deliver(self, room: str, payload: str) -> None:
        for deliver in self._subscribers:
            try:
                deliver(room, payload)
            except Exception:
                log.exception("a chat bus subscriber failed on a frame for %r", room)

    # -- publishing: the backlog of what Redis refused --------------------------------------

    def _keep(self, body: Message, error: BaseException | None) -> None:
        """Keep ``body`` for when Redis is back (``error``: why it could not go now)."""
        self.unpublished += 1
        if len(self._backlog) >= BACKLOG_LIMIT:
            self._backlog.popleft()
            self.dropped += 1
        self._backlog.append(body)
        if self._outage is None:  # once per outage: chat is too busy to log every frame
            self._outage = 0
            log.warning(
                "chat frames reach this process only until Redis takes them again: "
                "cannot publish (%s)",
                str(error) or type(error).__name__,
            )
        self._outage += 1

    def _flush_soon(self) -> None:
        """Publish the backlog in the background (one flusher at a time)."""
        if self._backlog and self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self._backlog:
                body = self._backlog[0]
                try:
                    await self._channel.publish(body)
                except PUBLISH_ERRORS:
                    return  # the next beat or resubscription tries again
                if self._backlog and self._backlog[0] is body:
                    self._backlog.popleft()
            log.info(
                "chat frames published again (%d had reached this process only, %d of them "
                "lost to a full backlog)",
                self._outage or 0,
                self.dropped,
            )
            self._outage = None
        finally:
            self._flusher = None

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(BEAT)
            try:
                await self._channel.publish({"beat": 1})
            except PUBLISH_ERRORS:
                continue
            self._flush_soon()

    # -- receiving ----------------------------------------------------------------------------

    def _receive(self, data: Message) -> None:
        """A message of another process (raising marks it malformed)."""
        if "payload" in data or "room" in data:
            room, payload = data["room"], data["payload"]
            if not (isinstance(room, str) and isinstance(payload, str)):
                raise TypeError("room and payload must be strings")
            if self._held is not None:
                self._held.append((room, payload))
            else:
                self._deliver(room, payload)
            return
        origin = data["origin"]
        if not isinstance(origin, str):
            raise TypeError("origin must be a string")
        if "beat" in data:
            self._heard_from(origin)
        elif "hello" in data:
            self._hello_from(origin, data["hello"], data["after"])
        elif "reply" in data:
            self._reply_from(origin, data)
        elif "bye" in data:
            self._peers.pop(origin, None)
        else:
            raise ValueError("not a chat bus message")

    def _heard_from(self, origin: str) -> None:
        self._peers[origin] = self._clock()
        gather = self._gather
        if gather is not None:
            gather.expect(origin)  # alive: it answers our hello, or says its own when back

    def _hello_from(self, origin: str, nonce: object, after: object) -> None:
        """Answer with what this process has not stored yet, as of now; and if we are filling
        and have no answer from it, say hello again: it may have subscribed after ours."""
        if not (isinstance(nonce, str) and isinstance(after, int)):
            raise TypeError("a hello has a string nonce and an integer id")
        self._heard_from(origin)
        frames = self._unstored(after) if self._unstored is not None else []
        self._spawn(self._publish_quietly({"to": origin, "reply": nonce, "frames": frames}))
        gather = self._gather
        if gather is not None and origin in gather.missing():
            self._spawn(self._publish_quietly({"hello": gather.nonce, "after": gather.after}))

    def _reply_from(self, origin: str, data: Message) -> None:
        self._heard_from(origin)
        gather = self._gather
        if gather is None or data["to"] != self.origin or data["reply"] != gather.nonce:
            return
        frames: Frames = []
        for room, payload in data["frames"]:
            if not (isinstance(room, str) and isinstance(payload, str)):
                raise TypeError("room and payload must be strings")
            frames.append((room, payload))
        gather.answer(origin, frames)

    # -- resubscribing: the fill --------------------------------------------------------------

    async def _resubscribed(self) -> None:
        """The first resync callback: hold frames from the channel, publish the backlog, and
        start the fill (which needs the channel read, so it runs beside the subscriber)."""
        if self._sync_task is not None:
            self._sync_task.cancel()
        self._held = []
        self._flush_soon()
        expected = {
            origin for origin, heard in self._peers.items() if heard >= self._lost_at - PEER_TIMEOUT
        }
        self._sync_task = asyncio.ensure_future(self._sync(self._floor_wall, expected))

    def _lost(self) -> None:
        """The channel broke: from the last confirmation on, frames may be missing."""
        if self.synced.is_set():
            self._floor_wall = self._channel.confirmed_at
            self._lost_at = self._clock()
        self.synced.clear()
        self._held = None
        if self._sync_task is not None:
            self._sync_task.cancel()  # the next resubscription fills from the same point
            self._sync_task = None

    async def _sync(self, floor_wall: float, expected: set[str]) -> None:
        after = first_id_at(int((floor_wall - FILL_MARGIN) * 1000))
        gather = _Gather(uuid.uuid4().hex, after, expected)
        self._gather = gather
        try:
            try:
                async with asyncio.timeout(FILL_WAIT):
                    await self._say_hello(gather)
                    await gather.complete.wait()
            except TimeoutError:
                log.warning(
                    "chat fill: %d process(es) did not answer within %.0fs; their messages "
                    "not stored yet may come late or not at all",
                    len(gather.missing()),
                    FILL_WAIT,
                )
            if self._fill is not None:
                try:
                    await self._fill(after, gather.frames)
                except Exception:
                    log.exception("chat fill failed: messages of the outage may be missing")
        finally:
            if self._gather is gather:
                self._gather = None
        held, self._held = self._held or [], None
        self._sync_task = None
        for room, payload in held:
            self._deliver(room, payload)
        self.synced.set()

    async def _say_hello(self, gather: _Gather) -> None:
        while True:
            try:
                await self._channel.publish({"hello": gather.nonce, "after": gather.after})
                return
            except PUBLISH_ERRORS as error:
                log.warning("chat fill: cannot say hello (%s); trying again", error)
            await asyncio.sleep(HELLO_RETRY)

    async def _publish_quietly(self, body: Message) -> None:
        try:
            await self._channel.publish(body)
        except PUBLISH_ERRORS as error:
            log.warning("chat bus: could not answer another process (%s)", error)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

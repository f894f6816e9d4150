"""Presence of several processes, shared through Redis.

``RedisPresence`` keeps, per room, a hash ``{prefix}:presence:{room}`` mapping each user to the
processes that hold them, each with a deadline in Redis server time. Lua scripts make "first
connection anywhere" and "last connection anywhere" atomic, a heartbeat pushes this process's
deadlines forward, and a process that dies without cleaning up drops out after ``ttl``. This
process's own counts stay in memory: they answer for tabs, and they are what a resync writes back
(the chat bus awaits ``resync`` on every resubscription, ``redis_bus.py``). Commands are tried
once more when their pooled connection turns out to be dead (``redis_channel.retried``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.background import cancel_and_wait
from server.redis_channel import retried

log = logging.getLogger("mservices.chat")


# Shared by the presence scripts. Times are Redis server time in ms, so the clocks of the
# processes never matter. An entry is a JSON object {process id: deadline}.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The live processes of an entry, leaving out `skip`; and whether there are any.
local function live(raw, skip)
  local entry, any = {}, false
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then
      for process, deadline in pairs(decoded) do
        if process ~= skip and type(deadline) == 'number' and deadline > now then
          entry[process] = deadline
          any = true
        end
      end
    end
  end
  return entry, any
end
"""

# KEYS[1] room hash; ARGV process, ttl ms, users... Registers (or refreshes) the process for
# every user; returns how many of them no other process held (for one user: 1 = first).
_REGISTER = (
    _PRELUDE
    + """
local ttl = tonumber(ARGV[2])
local first = 0
for i = 3, #ARGV do
  local entry, others = live(redis.call('HGET', KEYS[1], ARGV[i]), ARGV[1])
  if not others then first = first + 1 end
  entry[ARGV[1]] = now + ttl
  redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(entry))
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return first
"""
)

# KEYS[1] room hash; ARGV process, users... Unregisters the process for every user; returns
# how many of them no other process holds (for one user: 1 = last).
_UNREGISTER = (
    _PRELUDE
    + """
local last = 0
for i = 2, #ARGV do
  local entry, others = live(redis.call('HGET', KEYS[1], ARGV[i]), ARGV[1])
  if others then
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(entry))
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
    last = last + 1
  end
end
return last
"""
)

# KEYS[1] room hash. The users some live process holds; the others are deleted on the way.
_ONLINE = (
    _PRELUDE
    + """
local flat = redis.call('HGETALL', KEYS[1])
local users = {}
for i = 1, #flat, 2 do
  local _, any = live(flat[i + 1], nil)
  if any then users[#users + 1] = flat[i] else redis.call('HDEL', KEYS[1], flat[i]) end
end
return users
"""
)

CLOSE_TIMEOUT = 2.0


@dataclass(slots=True)
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0


class RedisPresence:
    """Presence across processes: the local counts of this one, the users of all in Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "mservices",
        process_id: str | None = None,
        ttl: float = 30.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._redis = redis
        self._prefix = prefix
        self.process_id = process_id or uuid.uuid4().hex
        self.ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self._rooms: dict[str, Counter[str]] = {}
        self._turns: dict[tuple[str, str], _Turn] = {}
        self._unregistered: set[tuple[str, str]] = set()
        self._register = redis.register_script(_REGISTER)
        self._unregister = redis.register_script(_UNREGISTER)
        self._online = redis.register_script(_ONLINE)
        self._task: asyncio.Task[None] | None = None

    def key(self, room: str) -> str:
        """The Redis hash of ``room``."""
        return f"{self._prefix}:presence:{room}"

    async def join(self, room: str, user: str) -> bool:
        """See Presence. Without Redis, the answer comes from this process's counts alone."""
        async with self._turn(room, user):
            counts = self._rooms.setdefault(room, Counter())
            counts[user] += 1
            if counts[user] > 1:
                return False
            self._unregistered.discard((room, user))
            try:
                first = await retried(
                    self._register,
                    keys=[self.key(room)],
                    args=[self.process_id, self._ttl_ms, user],
                )
            except (RedisError, OSError) as error:
                log.warning("presence of %r in %r not in Redis yet (%s)", user, room, error)
                return True
            return bool(first)

    async def leave(self, room: str, user: str) -> bool:
        """See Presence. Without Redis, the answer comes from this process's counts alone."""
        async with self._turn(room, user):
            counts = self._rooms.get(room)
            if counts is None or counts[user] <= 0:
                return False
            counts[user] -= 1
            if counts[user]:
                return False
            del counts[user]
            if not counts:
                del self._rooms[room]
            try:
                last = await retried(
                    self._unregister, keys=[self.key(room)], args=[self.process_id, user]
                )
            except (RedisError, OSError) as error:
                self._unregistered.add((room, user))  # the next resync takes it out
                log.warning("departure of %r from %r not in Redis yet (%s)", user, room, error)
                return True
            return bool(last)

    async def online(self, room: str) -> list[str]:
        """See Presence: every process's users (this process's alone when Redis is away)."""
        local = set(self._rooms.get(room, ()))
        try:
            users = await retried(self._online, keys=[self.key(room)])
        except (RedisError, OSError) as error:
            log.warning("presence of %r from this process only (%s)", room, error)
            return sorted(local)
        return sorted(local.union(_text(user) for user in users))

    async def resync(self) -> None:
        """Write this process's users back to Redis with fresh deadlines and take out those whose
        departure did not reach it: the heartbeat, and what the bus calls on resubscribing.
        Raises ``RedisError``/``OSError`` when Redis is away."""
        for room, counts in list(self._rooms.items()):
            users = list(counts)
            if not users:
                continue
            await retried(
                self._register, keys=[self.key(room)], args=[self.process_id, self._ttl_ms, *users]
            )
            # A departure that reached Redis while the refresh was on its way was undone by it.
            left = {(room, user) for user in users if not self._count(room, user)}
            self._unregistered.update(left)
        for room, user in list(self._unregistered):
            async with self._turn(room, user):
                if (room, user) not in self._unregistered:
                    continue
                if not self._count(room, user):
                    await retried(
                        self._unregister, keys=[self.key(room)], args=[self.process_id, user]
                    )
                self._unregistered.discard((room, user))

    async def start(self) -> None:
        """Start the heartbeat, which refreshes this process's entries every ``ttl / 3``."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._heartbeat_forever())

    async def close(self) -> None:
        """Stop the heartbeat and remove this process's entries (best effort, bounded); later
        leaves announce nothing."""
        if self._task is not None:
            # Cancels until the task has ended: on Python 3.11 a cancellation that lands as an
            # awaited wait_for (redis-py, asyncmy) finishes can be lost (cpython#86296).
            await cancel_and_wait(self._task)
            self._task = None
        rooms, self._rooms = self._rooms, {}
        self._unregistered.clear()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                for room, counts in rooms.items():
                    await self._unregister(keys=[self.key(room)], args=[self.process_id, *counts])
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("this process's presence stays in Redis until it expires (%s)", error)

    def _count(self, room: str, user: str) -> int:
        counts = self._rooms.get(room)
        return counts[user] if counts is not None else 0

    @contextlib.asynccontextmanager
    async def _turn(self, room: str, user: str) -> AsyncIterator[None]:
        """One Redis update at a time per (room, user) in this process, so they reach Redis in
        the order the local count changed (a quick leave and rejoin must not end up reversed)."""
        key = (room, user)
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        turn.holders += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.holders -= 1
            if not turn.holders:
                del self._turns[key]

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.resync()
            except (RedisError, OSError) as error:
                log.warning("presence heartbeat missed (%s)", error)
            except Exception:
                log.exception("presence heartbeat failed")


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()

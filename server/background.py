"""Background work: fire-and-forget coroutines that are still tracked, logged and drained, and
periodic work that runs until shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("mservices")

RECANCEL_SECONDS = 0.1
"""How long ``cancel_and_wait`` gives a cancelled task before cancelling it again."""


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has finished (its outcome is not raised here).

    A task that runs on after ``cancel()`` is cancelled again every RECANCEL_SECONDS: on Python
    3.11, ``asyncio.wait_for`` drops a cancellation that arrives just as the operation it waits
    for completes (python/cpython#86296, fixed in 3.12), and redis-py sends every command inside
    one. A Redis subscriber cancelled while it subscribes then goes on to wait for the next
    message forever, and so did a process stopped right after it started.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    if not task.cancelled() and task.exception() is not None:
        log.warning("a stopped task had failed", exc_info=task.exception())


class Background:
    """Holds a reference to every spawned task until it ends; failures are logged, not lost."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._periodic: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def every(
        self,
        interval: float,
        work: Callable[[], Awaitable[object]],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> asyncio.Task[None]:
        """Run ``work()`` now, then ``interval`` seconds after each run ends, until the task is
        cancelled or ``drain`` stops it; a failed run is logged and the next one still comes.
        ``sleep`` waits between runs (tests pass their own). Not counted by ``len``, which is
        the one-off work still running."""
        task = asyncio.ensure_future(self._repeat(interval, work, sleep))
        self._periodic.add(task)
        task.add_done_callback(self._periodic.discard)
        return task

    async def drain(self, timeout: float) -> None:
        """Stop the periodic work; wait up to ``timeout`` seconds for running one-off work, then
        cancel what is left."""
        for periodic in self._periodic:
            periodic.cancel()
        if self._periodic:
            await asyncio.wait(set(self._periodic), timeout=1)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)

    def __len__(self) -> int:
        return len(self._tasks)

    @staticmethod
    async def _repeat(
        interval: float,
        work: Callable[[], Awaitable[object]],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        while True:
            try:
                await work()
            except Exception:
                log.warning("periodic work failed", exc_info=True)
            await sleep(interval)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background work failed", exc_info=task.exception())

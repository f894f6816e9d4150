"""Background: spawned work is tracked until it ends, failures are logged, drain bounds shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.background import Background, cancel_and_wait


async def wait_forever(log: list[str]) -> None:
    """Work that never ends by itself; notes its cancellation."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        log.append("cancelled")
        raise


async def test_spawned_work_is_tracked_until_it_finishes() -> None:
    background = Background()
    release = asyncio.Event()
    task = background.spawn(release.wait())
    await asyncio.sleep(0)
    assert len(background) == 1
    assert not task.done()
    release.set()
    await task
    await asyncio.sleep(0)  # let the done callback run
    assert len(background) == 0


async def test_spawned_work_runs_without_anyone_awaiting_it() -> None:
    background = Background()
    done = asyncio.Event()

    async def work() -> None:
        done.set()

    background.spawn(work())
    await asyncio.wait_for(done.wait(), timeout=5)


async def test_work_that_fails_is_logged_and_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()

    async def broken() -> None:
        raise RuntimeError("disk on fire")

    with caplog.at_level(logging.WARNING, logger="mservices"):
        task = background.spawn(broken())
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert "background work failed" in caplog.text
    assert "disk on fire" in caplog.text
    assert len(background) == 0


async def test_cancelled_work_is_not_logged_as_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()
    with caplog.at_level(logging.WARNING, logger="mservices"):
        task = background.spawn(asyncio.Event().wait())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert task.cancelled()
    assert "background work failed" not in caplog.text
    assert len(background) == 0


async def test_drain_with_nothing_running_returns_at_once() -> None:
    await asyncio.wait_for(Background().drain(timeout=60), timeout=5)


async def test_drain_waits_for_work_that_finishes_in_time() -> None:
    background = Background()
    finished: list[str] = []

    async def work() -> None:
        await asyncio.sleep(0.05)
        finished.append("done")

    background.spawn(work())
    await background.drain(timeout=10)
    assert finished == ["done"]
    await asyncio.sleep(0)
    assert len(background) == 0


async def test_drain_cancels_the_work_that_outlasts_the_timeout() -> None:
    background = Background()
    quick_log: list[str] = []
    slow_log: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0)
        quick_log.append("done")

    quick_task = background.spawn(quick())
    slow_task = background.spawn(wait_forever(slow_log))
    await background.drain(timeout=0.1)
    assert quick_log == ["done"]
    assert not quick_task.cancelled()
    assert slow_task.cancelled()
    assert slow_log == ["cancelled"]
    await asyncio.sleep(0)
    assert len(background) == 0


async def test_cancel_and_wait_stops_a_task_that_swallowed_its_first_cancellation() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        # As a Redis subscriber does on Python 3.11 when the cancellation meets the end of a
        # command sent through asyncio.wait_for: the CancelledError is lost, the task waits on.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)  # let it reach its first wait
    await asyncio.wait_for(cancel_and_wait(task), 10)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_cancel_and_wait_logs_a_task_that_had_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.ensure_future(broken())
    await asyncio.wait({task})
    await cancel_and_wait(task)
    assert "a stopped task had failed" in caplog.text

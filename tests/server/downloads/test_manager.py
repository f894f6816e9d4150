"""DownloadManager against a real local upstream: saving, every failure, progress, cancel, the
concurrency cap, no overwrite and shutdown."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from repositories.errors import NotFound
from server.downloads.errors import ForbiddenAddress, InvalidUrl, QueueFull
from server.downloads.filenames import move_into_place
from server.downloads.manager import TEMPORARY_PREFIX, DownloadManager
from server.downloads.records import Download, State
from tests.server.downloads.conftest import (
    CHUNK,
    WAIT_LIMIT,
    Upstream,
    chinese,
    download_once,
    finished,
    make_manager,
    managed,
    payload,
    wait_until,
)

OWNER = 1


def files_in(directory: Path) -> list[str]:
    """Every entry of the downloads directory, partial files included."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


async def test_a_download_is_saved_under_its_name(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/bytes/100000/data.bin"))
    assert record.state in (State.QUEUED, State.RUNNING)
    await finished(manager, record)
    assert record.state is State.DONE, record.error
    assert (record.bytes, record.total) == (100000, 100000)
    assert (manager.directory / "data.bin").read_bytes() == payload(100000)
    assert files_in(manager.directory) == ["data.bin"]
    assert record.finished_at is not None


async def test_a_body_without_length_is_saved_too(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/bytes/70000?chunked=1"), "c.bin")
    await finished(manager, record)
    assert record.state is State.DONE, record.error
    assert record.total is None
    assert (manager.directory / "c.bin").read_bytes() == payload(70000)


async def test_refusals_happen_before_anything_starts(tmp_path: Path, upstream: Upstream) -> None:
    async with managed(tmp_path / "downloads", allow="") as strict:
        with pytest.raises(ForbiddenAddress):
            await strict.start(OWNER, upstream.url("/bytes/10"))
        with pytest.raises(InvalidUrl):
            await strict.start(OWNER, "gopher://127.0.0.1/")
        assert strict.list(OWNER) == []
        assert files_in(tmp_path / "downloads") == []


async def test_an_announced_oversize_body_is_refused_before_reading_it(
    tmp_path: Path, upstream: Upstream
) -> None:
    record = await download_once(
        tmp_path / "downloads", upstream.url("/bytes/50001/big"), max_bytes=50000
    )
    assert (record.state, record.error_code, record.error_status) == ("failed", "too_large", 413)
    assert record.bytes == 0
    assert files_in(tmp_path / "downloads") == []


async def test_an_unannounced_oversize_body_is_cut_off_at_the_cap(
    tmp_path: Path, upstream: Upstream
) -> None:
    record = await download_once(
        tmp_path / "downloads", upstream.url("/bytes/500000/big?chunked=1"), max_bytes=50000
    )
    assert (record.state, record.error_code) == ("failed", "too_large")
    assert 50000 < record.bytes < 500000
    assert files_in(tmp_path / "downloads") == []


async def test_a_body_of_exactly_the_cap_is_saved(tmp_path: Path, upstream: Upstream) -> None:
    record = await download_once(
        tmp_path / "downloads", upstream.url("/bytes/50000/edge?chunked=1"), max_bytes=50000
    )
    assert record.state is State.DONE, record.error


async def test_a_slow_upstream_times_out(tmp_path: Path, upstream: Upstream) -> None:
    record = await download_once(tmp_path / "downloads", upstream.url("/silent"), timeout=0.5)
    assert (record.state, record.error_code, record.error_status) == (
        "failed",
        "upstream_timeout",
        504,
    )
    assert files_in(tmp_path / "downloads") == []


async def test_redirects_to_allowed_addresses_are_followed(
    manager: DownloadManager, upstream: Upstream
) -> None:
    target = upstream.url("/bytes/1234/final.bin")
    hop = upstream.url("/redirect?to=" + quote(target, safe=""))
    record = await manager.start(OWNER, upstream.url("/redirect?to=" + quote(hop, safe="")))
    await finished(manager, record)
    assert record.state is State.DONE, record.error
    assert record.bytes == 1234


@pytest.mark.parametrize(
    ("target", "code", "status"),
    [
        ("http://10.0.0.1/x", "forbidden_address", 403),
        ("http://169.254.169.254/latest", "forbidden_address", 403),
        ("http://[::1]:1/", "forbidden_address", 403),
        ("file:///etc/passwd", "invalid_scheme", 422),
        ("http://a..b/x", "unresolvable_host", 422),
    ],
)
async def test_a_redirect_to_a_refused_url_fails_with_the_guards_reason(
    manager: DownloadManager, upstream: Upstream, target: str, code: str, status: int
) -> None:
    record = await manager.start(OWNER, upstream.url("/redirect?to=" + quote(target, safe="")))
    await finished(manager, record)
    assert (record.state, record.error_code, record.error_status) == ("failed", code, status)


async def test_more_than_five_redirects_fail(manager: DownloadManager, upstream: Upstream) -> None:
    url = upstream.url("/bytes/10")
    for _ in range(6):
        url = upstream.url("/redirect?to=" + quote(url, safe=""))
    record = await manager.start(OWNER, url)
    await finished(manager, record)
    assert (record.state, record.error_code) == ("failed", "too_many_redirects")


async def test_exactly_five_redirects_are_followed(
    manager: DownloadManager, upstream: Upstream
) -> None:
    url = upstream.url("/bytes/10")
    for _ in range(5):
        url = upstream.url("/redirect?to=" + quote(url, safe=""))
    record = await manager.start(OWNER, url)
    await finished(manager, record)
    assert record.state is State.DONE, record.error


async def test_an_upstream_error_status_is_reported(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/status/404"))
    await finished(manager, record)
    assert (record.state, record.error_code, record.error_status, record.upstream_status) == (
        "failed",
        "upstream_error",
        502,
        404,
    )
    assert str(record.error) == "the upstream answered 404"
    assert chinese(record.error) == "对方服务器返回 404"
    assert files_in(manager.directory) == []


async def test_an_unreachable_upstream_is_reported(manager: DownloadManager) -> None:
    record = await manager.start(OWNER, "http://127.0.0.1:1/nothing-listens")
    await finished(manager, record)
    assert (record.state, record.error_code) == ("failed", "upstream_unreachable")


async def test_progress_is_visible_while_running_and_cancel_deletes_the_partial_file(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/gated/a/200000?length=1"), "held.bin")
    await wait_until(lambda: record.bytes >= CHUNK, "the first chunk arrives")
    assert (record.state, record.total) == (State.RUNNING, 200000)
    assert files_in(manager.directory) == [f".part-{record.id}"]
    await manager.cancel(OWNER, record.id)
    assert record.state is State.CANCELLED
    assert record.error_code == "cancelled"
    assert files_in(manager.directory) == []
    assert manager.get(OWNER, record.id) is record


async def test_cancelling_a_finished_download_forgets_it_and_keeps_the_file(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/bytes/10/kept"))
    await finished(manager, record)
    await manager.cancel(OWNER, record.id)
    with pytest.raises(NotFound):
        manager.get(OWNER, record.id)
    assert files_in(manager.directory) == ["kept"]


async def test_beyond_the_cap_downloads_queue_then_are_refused(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with managed(tmp_path / "downloads", concurrency=1) as capped:
        first = await capped.start(OWNER, upstream.url("/gated/one/40000"))
        await wait_until(lambda: first.bytes > 0, "the first download runs")
        second = await capped.start(OWNER, upstream.url("/bytes/10/second"))
        with pytest.raises(QueueFull) as refused:
            await capped.start(OWNER, upstream.url("/bytes/10/third"))
        assert refused.value.status == 429
        assert refused.value.headers["Retry-After"]
        assert second.state is State.QUEUED
        upstream.gate("one").set()
        await finished(capped, first)
        await finished(capped, second)
        assert (first.state, second.state) == (State.DONE, State.DONE)


async def test_no_download_overwrites_another_or_an_existing_file(
    manager: DownloadManager, upstream: Upstream
) -> None:
    manager.directory.mkdir(parents=True)
    (manager.directory / "same.bin").write_bytes(b"already here")
    first = await manager.start(OWNER, upstream.url("/bytes/10"), "same.bin")
    second = await manager.start(OWNER, upstream.url("/bytes/20"), "same.bin")
    await finished(manager, first)
    await finished(manager, second)
    assert {first.filename, second.filename} == {"same-1.bin", "same-2.bin"}
    assert (manager.directory / "same.bin").read_bytes() == b"already here"
    assert len((manager.directory / first.filename).read_bytes()) == 10
    assert len((manager.directory / second.filename).read_bytes()) == 20


async def test_hostile_file_names_stay_inside_the_downloads_directory(
    manager: DownloadManager, upstream: Upstream
) -> None:
    names = ["../../etc/passwd", "..\\x", "/abs", "nul\x00byte", "a" * 4000, "..", "../"]
    records = [await manager.start(OWNER, upstream.url("/bytes/5"), name) for name in names]
    for record in records:
        await finished(manager, record)
        assert record.state is State.DONE, record.error
    saved = files_in(manager.directory)
    assert [record.filename for record in records][:4] == ["passwd", "x", "abs", "nulbyte"]
    assert len(saved) == len(names)
    assert all((manager.directory / name).resolve().parent == manager.directory for name in saved)
    assert not any(name.startswith(".") for name in saved)


async def test_owners_see_only_their_own_downloads(
    manager: DownloadManager, upstream: Upstream
) -> None:
    mine = await manager.start(1, upstream.url("/bytes/5"))
    theirs = await manager.start(2, upstream.url("/bytes/5"))
    assert manager.list(1) == [mine]
    assert manager.list(2) == [theirs]
    with pytest.raises(NotFound):
        manager.get(1, theirs.id)
    with pytest.raises(NotFound):
        await manager.cancel(1, theirs.id)
    await finished(manager, mine)
    await finished(manager, theirs)


async def test_shutdown_cancels_running_downloads_and_removes_partial_files(
    tmp_path: Path, upstream: Upstream
) -> None:
    closing = make_manager(tmp_path / "downloads")
    record = await closing.start(OWNER, upstream.url("/gated/shut/100000"))
    await wait_until(lambda: record.bytes > 0, "the download runs")
    await closing.close()
    assert record.state is State.CANCELLED
    assert files_in(tmp_path / "downloads") == []
    with pytest.raises(Exception, match="shutting down"):
        await closing.start(OWNER, upstream.url("/bytes/5"))


async def test_concurrent_starts_cannot_all_pass_the_queue_cap(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with managed(tmp_path / "downloads", concurrency=1) as capped:
        url = upstream.url("/gated/cap/40000")
        outcomes = await asyncio.gather(
            *(capped.start(OWNER, url, f"n{index}") for index in range(10)),
            return_exceptions=True,
        )
        started = [outcome for outcome in outcomes if isinstance(outcome, Download)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, QueueFull)]
        assert (len(started), len(refused)) == (2, 8), outcomes
        assert capped.ended["refused"] == 8
        upstream.gate("cap").set()
        for record in started:
            assert (await finished(capped, record)).state is State.DONE, record.error


async def test_a_name_taken_meanwhile_releases_the_reserved_one(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/gated/taken/40000"), "a.bin")
    await wait_until(lambda: record.bytes > 0, "the download runs")
    (manager.directory / "a.bin").write_bytes(b"saved meanwhile by another process")
    upstream.gate("taken").set()
    await finished(manager, record)
    assert record.filename == "a-1.bin"
    for name in ("a.bin", "a-1.bin"):
        (manager.directory / name).unlink()
    again = await finished(manager, await manager.start(OWNER, upstream.url("/bytes/5"), "a.bin"))
    assert again.filename == "a.bin", "the first reservation of a.bin was never released"


class HeldMoves(ThreadPoolExecutor):
    """The manager's writer threads, except that the final move waits for ``release``: the test
    can act while a move is in progress (``moving`` is set once it is)."""

    def __init__(self) -> None:
        super().__init__(4, thread_name_prefix="held-moves")
        self.moving = threading.Event()
        self.release = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if isinstance(fn, functools.partial) and fn.func is move_into_place:
            return super().submit(self._held, fn)
        return super().submit(fn, *args, **kwargs)

    def _held(self, move: Callable[[], str]) -> str:
        self.moving.set()
        self.release.wait(WAIT_LIMIT)
        return move()


async def test_a_cancel_during_the_final_move_leaves_the_download_done(
    tmp_path: Path, upstream: Upstream
) -> None:
    pool = HeldMoves()
    async with managed(tmp_path / "downloads", pool=pool) as held:
        record = await held.start(OWNER, upstream.url("/bytes/3000"), "moved.bin")
        await wait_until(pool.moving.is_set, "the final move starts")
        cancelling = asyncio.create_task(held.cancel(OWNER, record.id))
        await asyncio.sleep(0)  # one turn of the loop (not a delay): the cancel is now delivered
        pool.release.set()
        await cancelling
        assert record.state is State.DONE, record.error
        assert files_in(held.directory) == ["moved.bin"]
        assert (held.directory / "moved.bin").read_bytes() == payload(3000)


async def test_leftover_temporary_files_older_than_the_timeout_are_deleted_at_start(
    tmp_path: Path, upstream: Upstream
) -> None:
    directory = tmp_path / "downloads"
    directory.mkdir()
    stale = directory / f"{TEMPORARY_PREFIX}crashed"
    fresh = directory / f"{TEMPORARY_PREFIX}another-process"
    stale.write_bytes(b"left by a killed process")
    fresh.write_bytes(b"still being written")
    old = time.time() - 31
    os.utime(stale, (old, old))
    record = await download_once(directory, upstream.url("/bytes/5/new.bin"), timeout=30.0)
    assert record.state is State.DONE, record.error
    assert files_in(directory) == [fresh.name, "new.bin"]

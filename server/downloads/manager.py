"""``DownloadManager``: starts downloads as tasks, caps how many run, answers what became of them.

Records live in the memory of the process that runs the download: a download is a task of that
process, it dies with it, and its progress changes many times a second, so a table would add
writes without making a download survive a restart. With several processes a client keeps
talking to the same one for its records (the files themselves are shared on disk). At most
``KEEP_FINISHED`` finished records are kept; the oldest are forgotten first.

Beyond ``concurrency`` running downloads, new ones wait ``queued`` (a semaphore, in order); when
as many again are already waiting, ``start`` refuses with ``QueueFull`` (429).

Quotas (``server/downloads/quotas.py``), checked in this order so a refused start costs nothing:
a user with ``user_concurrency`` downloads running or queued here is refused
(``UserConcurrencyCap``, 429); after the URL check, a directory already at its disk cap is
refused (``DiskCap``, 507) and a running download that would pass it is cut off (failed,
``disk_cap``); last, the daily cap counts and records the start in the database
(``UserDailyCap``, 429). Saved files older than the keep time are deleted by ``expire``, which
``start_expiry`` runs at once and then every ``EXPIRY_INTERVAL`` seconds.

Temporary files (``.part-*``) of downloads a killed process never finished are deleted before
this process's first download, once they are older than the download timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import glob
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.errors import NotFound
from schemas.text import Text, ntext
from server.background import Background
from server.downloads.errors import Cancelled, DownloadError, QueueFull, UserConcurrencyCap
from server.downloads.filenames import choose_name, move_into_place, unused_name
from server.downloads.guard import AddressPolicy, UrlGuard
from server.downloads.quotas import (
    Clock,
    DailyQuota,
    DiskBudget,
    Quotas,
    disk_usage,
    remove_expired,
)
from server.downloads.records import Download, State
from server.downloads.transfer import Limits, transfer
from server.settings import Settings

log = logging.getLogger("mservices.downloads")
ResultT = TypeVar("ResultT")

KEEP_FINISHED = 1000
WRITER_THREADS = 4
TEMPORARY_PREFIX = ".part-"
EXPIRY_INTERVAL = 3600.0
"""Seconds between two sweeps of expired saved files."""


class DownloadManager:
    """The downloads of this process: start, look up, wait for, cancel, and stop them all."""

    def __init__(
        self,
        directory: Path,
        guard: UrlGuard,
        limits: Limits,
        *,
        concurrency: int,
        pool: ThreadPoolExecutor | None = None,
        quotas: Quotas | None = None,
        daily: DailyQuota | None = None,
        clock: Clock = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Save into ``directory``; check URLs with ``guard``; run ``concurrency`` at once; do
        the file work in ``pool`` (default: ``WRITER_THREADS`` threads of its own); enforce
        ``quotas`` (default: ``Quotas()``) and ``daily`` (None: no daily cap). ``clock`` dates
        expiry and ``sleep`` waits between sweeps (tests pass their own)."""
        self.directory = directory
        self.guard = guard
        self.limits = limits
        self.concurrency = concurrency
        self.quotas = quotas or Quotas()
        self.daily = daily
        self.disk = DiskBudget(self.quotas.disk_max_bytes)
        self._clock = clock
        self._sleep = sleep
        self._expiry: asyncio.Task[None] | None = None
        self._starting_by_owner: collections.Counter[int] = collections.Counter()
        self._slots = asyncio.Semaphore(concurrency)
        self._records: dict[str, Download] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reserved: set[str] = set()
        self._pool = pool or ThreadPoolExecutor(
            WRITER_THREADS, thread_name_prefix="mservices-downloads"
        )
        self._closed = False
        self._running = 0
        self._starting = 0
        self._swept = False
        self.ended: collections.Counter[str] = collections.Counter()
        """Downloads ended so far, by outcome: ``done``, ``failed``, ``cancelled``, ``refused``."""

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: async_sessionmaker[AsyncSession]
    ) -> DownloadManager:
        """A manager configured by the ``DOWNLOAD_*`` settings, counting daily starts in the
        database of ``sessions``."""
        return cls(
            settings.effective_download_dir,
            UrlGuard(AddressPolicy(settings.download_allow)),
            Limits(settings.download_max_bytes, settings.download_timeout_seconds),
            concurrency=settings.download_concurrency,
            quotas=Quotas.from_settings(settings),
            daily=DailyQuota(sessions, settings.download_user_daily),
        )

    @property
    def running(self) -> int:
        """Downloads transferring now (not those queued for a slot)."""
        return self._running

    @property
    def unfinished(self) -> int:
        """Downloads queued or running."""
        return len(self._tasks)

    def unfinished_of(self, owner_id: int) -> int:
        """The downloads of ``owner_id`` queued, running or being started here."""
        tasks = sum(1 for key in self._tasks if self._records[key].owner_id == owner_id)
        return tasks + self._starting_by_owner[owner_id]

    async def start(
        self,
        owner_id: int,
        url: str,
        filename: str | None = None,
        *,
        actor: str | None = None,
        client_ip: str | None = None,
    ) -> Download:
        """Check the caps and ``url`` (refusals raise before anything starts), record the start
        for the daily cap (as ``actor`` from ``client_ip``), reserve a file name and start the
        download in the background."""
        if self._closed:
            raise DownloadError(Text("the server is shutting down"), code="shutting_down")
        # Starts still awaiting the guard or a name count against the caps, or concurrent
        # starts would all pass the check before any of them became a task.
        if self.unfinished + self._starting >= 2 * self.concurrency:
            self.ended["refused"] += 1
            raise QueueFull(
                ntext(
                    "{count} download is running and as many are queued; try again later",
                    "{count} downloads are running and as many are queued; try again later",
                    self.concurrency,
                )
            )
        if self.unfinished_of(owner_id) >= self.quotas.user_concurrency:
            self.ended["refused"] += 1
            raise UserConcurrencyCap(self.quotas.user_concurrency)
        self._starting += 1
        self._starting_by_owner[owner_id] += 1
        try:
            try:
                await self.guard.check(url)
                await self._sweep_once()
                await self._measure_disk()
                self.disk.check_room()
                if self.daily is not None:
                    await self.daily.admit(owner_id, url, actor=actor, client_ip=client_ip)
            except DownloadError:
                self.ended["refused"] += 1
                raise
            name = await self._reserve_name(choose_name(filename, url))
            record = Download(id=uuid.uuid4().hex, owner_id=owner_id, url=url, filename=name)
            self._records[record.id] = record
            self._tasks[record.id] = asyncio.create_task(self._run(record), name=f"download-{name}")
        finally:
            self._starting -= 1
            self._starting_by_owner[owner_id] -= 1
            if not self._starting_by_owner[owner_id]:
                del self._starting_by_owner[owner_id]
        self._forget_old()
        return record

    def get(self, owner_id: int, download_id: str) -> Download:
        """The caller's download ``download_id``; ``NotFound`` for anyone else's."""
        record = self._records.get(download_id)
        if record is None or record.owner_id != owner_id:
            raise NotFound(Text("no such download"))
        return record

    def list(self, owner_id: int) -> list[Download]:
        """The caller's downloads, newest first."""
        return [
            record for record in reversed(self._records.values()) if record.owner_id == owner_id
        ]

    async def wait(self, record: Download) -> Download:
        """Wait until ``record`` is done, failed or cancelled."""
        await record.finished.wait()
        return record

    async def cancel(self, owner_id: int, download_id: str) -> None:
        """Cancel the caller's download (its partial file is deleted); a finished one is
        forgotten (its file stays)."""
        self.get(owner_id, download_id)
        task = self._tasks.get(download_id)
        if task is None:
            self._records.pop(download_id, None)
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def start_expiry(self, background: Background) -> asyncio.Task[None]:
        """Run ``expire`` now and then every ``EXPIRY_INTERVAL`` seconds as ``background``'s
        periodic work (``Services.background``); ``close`` stops it. Returns its task."""
        self._expiry = background.every(EXPIRY_INTERVAL, self.expire, sleep=self._sleep)
        return self._expiry

    async def expire(self) -> int:
        """Delete the saved files older than the keep time (never a running download's partial
        file) and measure the directory again; how many were deleted."""
        older_than = self._clock() - self.quotas.keep_seconds
        try:
            removed = await self._in_pool(
                functools.partial(remove_expired, self.directory, older_than)
            )
        except OSError as error:  # the downloads themselves will report a broken directory
            log.warning("could not delete expired downloads: %s", error)
            return 0
        await self._measure_disk()
        if removed:
            log.info("deleted %d expired downloads", removed)
        return removed

    async def close(self) -> None:
        """Cancel every download, delete their partial files and release the writer threads."""
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.guard.close()
        self._pool.shutdown(wait=False)

    # -- the task ------------------------------------------------------------------------------

    async def _run(self, record: Download) -> None:
        temporary = self.directory / f"{TEMPORARY_PREFIX}{record.id}"
        reserved = record.filename  # the move may save under another name; release this one
        outcome = State.FAILED
        meter = self.disk.meter()
        try:
            async with self._slots:
                record.state = State.RUNNING
                self._running += 1
                try:
                    handle = await self._in_pool(functools.partial(_open_new, temporary))
                    try:
                        await transfer(record, self.guard, self.limits, handle, self._pool, meter)
                    finally:
                        await self._in_pool(handle.close)
                finally:
                    self._running -= 1
                move = functools.partial(
                    move_into_place,
                    temporary,
                    self.directory,
                    reserved,
                    frozenset(self._reserved - {reserved}),
                )
                record.filename = await self._complete(move)
            outcome = State.DONE
        except asyncio.CancelledError:
            record.fail(Cancelled(Text("the download was cancelled")))
            outcome = State.CANCELLED
        except DownloadError as error:
            record.fail(error)
        except Exception as error:
            log.exception("download %s failed", record.id)
            failed = Text("the download failed: {error}", error=str(error))
            record.fail(DownloadError(failed, code="internal_error"))
        finally:
            self._reserved.discard(reserved)
            self._tasks.pop(record.id, None)
            meter.settle(saved=outcome is State.DONE)  # with the pop: a scan now sees its file
            try:
                await asyncio.shield(self._in_pool(functools.partial(_remove, temporary)))
            finally:
                self.ended[outcome.value] += 1
                record.settle(outcome)

    async def _complete(self, move: Callable[[], str]) -> str:
        """Run the final move to its end: once the body is saved, a cancel arriving meanwhile
        (from the owner or shutdown) no longer undoes the download, which is reported done
        rather than cancelled with its file in place or its temporary file removed mid-link."""
        moving = asyncio.ensure_future(self._in_pool(move))
        interrupted = False
        while True:
            try:
                name = await asyncio.shield(moving)
                break
            except asyncio.CancelledError:
                if moving.cancelled():
                    raise
                interrupted = True
        task = asyncio.current_task()
        if interrupted and task is not None:
            task.uncancel()
        return name

    async def _sweep_once(self) -> None:
        """Before this process's first download, delete temporary files a crashed process left
        behind: older than the download timeout, so no running download (of any process) owns
        them."""
        if self._swept:
            return
        self._swept = True
        sweep = functools.partial(
            _remove_stale, self.directory, TEMPORARY_PREFIX, self.limits.timeout
        )
        try:
            removed = await self._in_pool(sweep)
        except OSError as error:  # the downloads themselves will report a broken directory
            log.warning("could not sweep leftover temporary downloads: %s", error)
            return
        if removed:
            log.info("deleted %d leftover temporary download files", removed)

    async def _measure_disk(self) -> None:
        """Scan the directory: what it holds besides this process's partial files, whose bytes
        the disk budget already counts as they arrive."""
        partial = frozenset(f"{TEMPORARY_PREFIX}{key}" for key in self._tasks)
        try:
            self.disk.stored = await self._in_pool(
                functools.partial(disk_usage, self.directory, partial)
            )
        except OSError as error:  # keep the last figure; the downloads will report the directory
            log.warning("could not measure the downloads directory: %s", error)

    async def _reserve_name(self, name: str) -> str:
        """A name no other download of this process holds and no file has, now reserved."""
        while True:
            pick = functools.partial(_pick_name, self.directory, name, frozenset(self._reserved))
            chosen = await self._in_pool(pick)
            if chosen not in self._reserved:  # another start may have taken it meanwhile
                self._reserved.add(chosen)
                return chosen

    async def _in_pool(self, work: Callable[[], ResultT]) -> ResultT:
        """Run blocking file work in the manager's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def _forget_old(self) -> None:
        finished = [key for key, record in self._records.items() if record.is_finished]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._records[key]


def _pick_name(directory: Path, name: str, taken: frozenset[str]) -> str:
    """Create ``directory`` if needed and pick an unused name in it (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    return unused_name(directory, name, taken)


def _remove(path: Path) -> None:
    """Delete ``path`` if it exists (blocking)."""
    path.unlink(missing_ok=True)


def _remove_stale(directory: Path, prefix: str, age: float) -> int:
    """Delete the files of ``directory`` named ``prefix*`` not modified for ``age`` seconds;
    how many were deleted (blocking)."""
    if not directory.is_dir():
        return 0
    oldest = time.time() - age
    removed = 0
    for path in directory.glob(f"{glob.escape(prefix)}*"):
        with contextlib.suppress(FileNotFoundError):  # another process swept it first
            if path.is_file() and path.stat().st_mtime < oldest:
                path.unlink()
                removed += 1
    return removed


def _open_new(path: Path) -> BinaryIO:
    """Create ``path`` for writing; it must not exist (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("xb")

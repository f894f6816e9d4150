"""What one user and the disk may take: the per-user daily cap, the disk cap, saved-file expiry.

- ``DailyQuota``: at most ``DOWNLOAD_USER_DAILY`` accepted downloads per user in any 24 hours.
  Each accepted download writes a ``download_started`` audit row; the check counts that user's
  rows of the window and writes the new one in one transaction, under a named lock per user
  (``repositories.locks.hold``), so racing starts in any number of processes never pass the cap
  and a restart forgets nothing. A refusal's ``Retry-After`` is when the oldest counted start
  leaves the window.
- ``DiskBudget``: the downloads directory's size against ``DOWNLOAD_DISK_MAX_BYTES``: what the
  last scan found (done at every start, after each expiry sweep) plus what this process's
  downloads have written since. Another process's running downloads count as far as their
  partial files had grown at that scan.
- ``remove_expired``: deletes saved files older than ``DOWNLOAD_KEEP_DAYS``; hidden files (the
  ``.part-*`` files of running downloads) are never touched.

The per-user concurrency cap lives in the manager: it counts the downloads of this process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.downloads import DownloadStartRepository
from repositories.locks import hold
from server.downloads.errors import DiskCap, UserDailyCap
from server.settings import Settings

DAY_SECONDS = 24 * 3600.0
Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``); tests pass their own."""


@dataclass(frozen=True, slots=True)
class Quotas:
    """The caps of the ``DOWNLOAD_*`` settings that the manager enforces itself."""

    user_concurrency: int = 3
    disk_max_bytes: int = 1024**3
    keep_seconds: float = 7 * DAY_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        """The quotas of ``settings``."""
        return cls(
            user_concurrency=settings.download_user_concurrency,
            disk_max_bytes=settings.download_disk_max_bytes,
            keep_seconds=settings.download_keep_days * DAY_SECONDS,
        )


class DailyQuota:
    """At most ``limit`` accepted downloads per user in any ``window`` seconds, counted in the
    database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        limit: int,
        *,
        window: float = DAY_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        """Count in the database of ``sessions``; ``clock`` dates the starts."""
        self.sessions = sessions
        self.limit = limit
        self.window = window
        self.clock = clock

    async def admit(
        self, owner_id: int, url: str, *, actor: str | None = None, client_ip: str | None = None
    ) -> None:
        """Record the start of ``url`` by ``owner_id``, or refuse it with ``UserDailyCap``."""
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        window = dt.timedelta(seconds=self.window)
        async with self.sessions() as session, session.begin():
            await hold(session, f"downloads:{owner_id}")
            starts = DownloadStartRepository(session)
            recent = await starts.after(owner_id, now - window)
            if recent.count >= self.limit:
                oldest = recent.oldest or now
                wait = (oldest + window - now).total_seconds()
                raise UserDailyCap(self.limit, max(1, math.ceil(wait)))
            await starts.add(owner_id, url, at=now, actor=actor, client_ip=client_ip)


class DiskBudget:
    """The bytes the downloads directory holds, against ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        """Allow at most ``max_bytes`` in the directory."""
        self.max_bytes = max_bytes
        self.stored = 0
        """Bytes found by the last scan (this process's partial files left out)."""
        self.writing = 0
        """Bytes this process's unfinished downloads have received."""

    @property
    def used(self) -> int:
        """What the directory holds, as far as this process knows."""
        return self.stored + self.writing

    def check_room(self) -> None:
        """``DiskCap`` when the directory already holds ``max_bytes`` or more."""
        if self.used >= self.max_bytes:
            raise DiskCap(self.max_bytes)

    def meter(self) -> Meter:
        """A meter for one download's body."""
        return Meter(self)


class Meter:
    """One download's share of the ``DiskBudget``: every received chunk is charged before it is
    written, and a chunk (or an announced length) that would pass the cap stops the download."""

    def __init__(self, budget: DiskBudget) -> None:
        self.budget = budget
        self.spent = 0

    def announce(self, length: int) -> None:
        """``DiskCap`` when a body of ``length`` bytes would not fit."""
        if self.budget.used + length > self.budget.max_bytes:
            raise DiskCap(self.budget.max_bytes, running=True)

    def charge(self, count: int) -> None:
        """Count ``count`` more bytes; ``DiskCap`` once the directory would pass the cap."""
        self.spent += count
        self.budget.writing += count
        if self.budget.used > self.budget.max_bytes:
            raise DiskCap(self.budget.max_bytes, running=True)

    def settle(self, *, saved: bool) -> None:
        """The download ended: its bytes are now a saved file, or gone with its partial file."""
        self.budget.writing -= self.spent
        if saved:
            self.budget.stored += self.spent
        self.spent = 0


def disk_usage(directory: Path, skip: frozenset[str]) -> int:
    """The total size of the regular files of ``directory`` not named in ``skip`` (blocking)."""
    total = 0
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if entry.name in skip:
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def remove_expired(directory: Path, older_than: float) -> int:
    """Delete the saved files of ``directory`` last modified before ``older_than`` (seconds since
    the epoch); hidden files, partial downloads among them, are kept. How many were deleted
    (blocking)."""
    removed = 0
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):  # another process expired it first
                if (
                    entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < older_than
                ):
                    os.unlink(entry.path)
                    removed += 1
    return removed

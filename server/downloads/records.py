"""What is known about one download: the record the API shows and the manager updates."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from dataclasses import dataclass, field

from schemas.text import Text
from server.downloads.errors import DownloadError, UpstreamError


class State(enum.StrEnum):
    """Where a download stands."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({State.DONE, State.FAILED, State.CANCELLED})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True, eq=False)
class Download:
    """One download, kept in the memory of the process that runs it."""

    id: str
    owner_id: int
    url: str
    filename: str
    state: State = State.QUEUED
    bytes: int = 0
    total: int | None = None
    error: Text | str | None = None
    """Why it failed or was cancelled: a ``Text`` the edge translates for the reader."""
    error_code: str | None = None
    error_status: int | None = None
    upstream_status: int | None = None
    created_at: dt.datetime = field(default_factory=_now)
    finished_at: dt.datetime | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def is_finished(self) -> bool:
        """True once done, failed or cancelled."""
        return self.state in FINISHED

    def fail(self, error: DownloadError) -> None:
        """Record why the download failed, with the status the seed's ``/download`` answers."""
        self.state = State.FAILED
        self.error = error.message
        self.error_code = error.code
        self.error_status = error.status
        if isinstance(error, UpstreamError):
            self.upstream_status = error.upstream_status

    def settle(self, state: State) -> None:
        """Mark the download finished in ``state`` and wake whoever waits for it."""
        self.state = state
        self.finished_at = _now()
        self.finished.set()

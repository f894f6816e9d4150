"""Download starts: the ``download_started`` rows of the audit log, which the per-user daily cap
counts (so the count holds across processes and restarts, and the audit reader shows them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.models import AuditEntry

DOWNLOAD_STARTED = "download_started"


@dataclass(frozen=True, slots=True)
class Starts:
    """How many downloads a user started after a moment, and when the oldest of them was."""

    count: int
    oldest: dt.datetime | None


class DownloadStartRepository:
    """Record accepted downloads and count a user's recent ones."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        user_id: int,
        url: str,
        *,
        at: dt.datetime,
        actor: str | None = None,
        client_ip: str | None = None,
    ) -> AuditEntry:
        """Record that ``user_id`` started a download of ``url`` at ``at``."""
        entry = AuditEntry(
            action=DOWNLOAD_STARTED,
            user_id=user_id,
            actor=actor[:32] if actor else actor,
            detail=url[:255],
            client_ip=client_ip,
            created_at=at,
        )
        self.session.add(entry)
        await self.session.flush()
        return entry

    async def after(self, user_id: int, moment: dt.datetime) -> Starts:
        """The downloads ``user_id`` started after ``moment`` (not at it)."""
        query = select(func.count(AuditEntry.id), func.min(AuditEntry.created_at)).where(
            AuditEntry.user_id == user_id,
            AuditEntry.action == DOWNLOAD_STARTED,
            AuditEntry.created_at > moment,
        )
        count, oldest = (await self.session.execute(query)).one()
        return Starts(int(count), oldest)

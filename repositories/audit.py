"""The audit repository: an append-only record of security-relevant events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.models import AuditEntry


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of entries, newest first, and the ``before`` that continues after it (None on
    the last page)."""

    items: Sequence[AuditEntry]
    next_before: int | None


class AuditRepository:
    """Append audit entries and read them back (newest first)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        action: str,
        *,
        user_id: int | None = None,
        actor: str | None = None,
        detail: str | None = None,
        client_ip: str | None = None,
    ) -> AuditEntry:
        """Record ``action`` (e.g. ``login``, ``login_failed``, ``logout``)."""
        entry = AuditEntry(
            action=action,
            user_id=user_id,
            actor=actor[:32] if actor else actor,
            detail=detail[:255] if detail else detail,
            client_ip=client_ip,
        )
        self.session.add(entry)
        await self.session.flush()
        return entry

    async def list(
        self, *, user_id: int | None = None, action: str | None = None, limit: int = 100
    ) -> Sequence[AuditEntry]:
        """The newest entries, optionally of one user or one action."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(AuditEntry.user_id == user_id)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        return (await self.session.scalars(query)).all()

    async def page(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> AuditPage:
        """Entries newest first, filtered by exact ``actor`` and ``action`` and by time
        (``since`` inclusive, ``until`` exclusive), with ids below ``before`` (keyset paging:
        pass the previous page's ``next_before``; rows added meanwhile never shift a page)."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
        if actor is not None:
            query = query.where(AuditEntry.actor == actor)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        if since is not None:
            query = query.where(AuditEntry.created_at >= since)
        if until is not None:
            query = query.where(AuditEntry.created_at < until)
        if before is not None:
            query = query.where(AuditEntry.id < before)
        rows = (await self.session.scalars(query)).all()
        if len(rows) > limit:
            return AuditPage(items=rows[:limit], next_before=rows[limit - 1].id)
        return AuditPage(items=rows, next_before=None)

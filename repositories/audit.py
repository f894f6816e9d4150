"""The audit repository: an append-only record of security-relevant events."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.models import AuditEntry


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

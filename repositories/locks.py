"""Named locks in the database, for writes whose checks must see every earlier write.

``hold(session, name)`` updates the lock's row: MariaDB keeps that row locked, and SQLite its
one write lock, until the transaction ends, so a second writer waits there. Reads made after it
see what every earlier holder committed (MariaDB runs at READ COMMITTED, see ``db.py``; SQLite
took its write lock first). A check such as "no menu cycle" or "one superuser remains" is
therefore made by one transaction at a time, on both backends.
"""

from __future__ import annotations

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.models import AppLock

ADMIN_LOCK = "admin"
"""Serializes the menu tree, role grants and superuser changes: rare writes, so one lock."""


async def hold(session: AsyncSession, name: str = ADMIN_LOCK) -> None:
    """Take the lock ``name`` until the session's transaction ends (waiting for its holder)."""
    statement = (
        update(AppLock)
        .where(AppLock.name == name)
        .values(generation=AppLock.generation + 1)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    if getattr(result, "rowcount", 1):
        return
    try:
        async with session.begin_nested():
            await session.execute(insert(AppLock).values(name=name, generation=1))
    except IntegrityError:
        await session.execute(statement)  # created meanwhile by another transaction

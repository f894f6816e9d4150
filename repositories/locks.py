"""Named locks in the database, for writes whose checks must see every earlier write.

``hold(session, name)`` updates the lock's row: MariaDB keeps that row locked, and SQLite its
one write lock, until the transaction ends, so a second writer waits there. Reads made after it
see what every earlier holder committed (MariaDB runs at READ COMMITTED, see ``db.py``; SQLite
took its write lock first). A check such as "no menu cycle" or "one superuser remains" is
therefore made by one transaction at a time, on both backends.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

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
    # No row yet (someone deleted it). SQLite: this transaction already holds the one write
    # lock, so an upsert here is safe. MariaDB: an INSERT racing others inside the transaction
    # leaves each loser a shared lock that its UPDATE must upgrade, and two losers deadlock; so
    # the row is created in a short transaction of its own (READ COMMITTED took no gap lock
    # for the empty UPDATE, nothing waits), then locked like any other time.
    values = {"name": name, "generation": 0}
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        engine = session.bind
        if not isinstance(engine, AsyncEngine):
            raise TypeError("hold() needs a session bound to an AsyncEngine")
        async with engine.begin() as connection:
            await connection.execute(mysql_insert(AppLock).values(values).prefix_with("IGNORE"))
        await session.execute(statement)
        return
    sqlite_upsert = sqlite_insert(AppLock).values(values)
    await session.execute(
        sqlite_upsert.on_conflict_do_update(
            index_elements=[AppLock.name], set_={"generation": AppLock.generation + 1}
        )
    )

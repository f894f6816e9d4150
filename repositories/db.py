"""Engine and session factory: how mservices opens its database, for SQLite and MariaDB alike."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry


def is_sqlite(url: str | URL) -> bool:
    """True when the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, safe to print or log.

    An unescaped ``@`` inside the password would make the parser split it wrongly, so the
    credentials are masked up to the *last* ``@`` before the path.
    """
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"^([\w+.-]*://[^:/@]*):[^/]*@", r"\1:***@", url)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 5,
    connect_timeout: float = 5.0,
) -> AsyncEngine:
    """Create the async engine with the settings each backend needs to be safe under load.

    SQLite: foreign keys on, WAL journal, a busy timeout so concurrent writers wait instead of
    failing (SQLAlchemy's own pool: one file, no server to protect). MariaDB: utf8mb4, READ
    COMMITTED, pre-ping and recycling so a restarted server is reconnected to, and at most
    ``pool_size + max_overflow`` connections; a request that finds them all busy waits up to
    ``connect_timeout`` seconds for one, then fails.
    """
    parsed = make_url(url)
    if is_sqlite(parsed):
        engine = create_async_engine(parsed, connect_args={"timeout": 30}, pool_pre_ping=False)
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        return engine
    query = dict(parsed.query)
    query.setdefault("charset", "utf8mb4")
    connect_args: dict[str, Any] = {"connect_timeout": int(max(1, connect_timeout))}
    return create_async_engine(
        parsed.set(query=query),
        # As Django does on MySQL: each statement sees what has been committed, so a check made
        # after taking a lock (repositories/locks.py) sees the lock's previous holder's writes.
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=3600,
        pool_timeout=connect_timeout,
        connect_args=connect_args,
    )


def _configure_sqlite_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The factory of request sessions: objects stay usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)

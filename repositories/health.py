"""Database liveness: one round trip that proves the database answers."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.errors import DatabaseUnavailable

PING_TIMEOUT = 3.0


async def ping(engine: AsyncEngine, *, timeout: float = PING_TIMEOUT) -> None:
    """Run ``SELECT 1``; raise DatabaseUnavailable when it fails or exceeds ``timeout``."""
    try:
        async with asyncio.timeout(timeout), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as error:
        raise DatabaseUnavailable(describe_database_error(error)) from error


def describe_database_error(error: BaseException) -> str:
    """One line saying why the database failed: the driver's own message, without SQLAlchemy's
    multi-line decoration."""
    cause = getattr(error, "orig", None) or error
    text = " ".join(str(cause).split())
    return text or type(cause).__name__

"""Engine and URL helpers: masked passwords, SQLite's pragmas, MariaDB's connection options."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from repositories.db import create_engine, is_sqlite, make_session_factory, mask_url
from repositories.models import Role


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "mysql+asyncmy://root:s3cret@db.internal:3306/mservices?charset=utf8mb4",
            "mysql+asyncmy://root:***@db.internal:3306/mservices?charset=utf8mb4",
        ),
        ("mysql+asyncmy://app:p%40ss%3Aw0rd@db/x", "mysql+asyncmy://app:***@db/x"),
        ("mysql+asyncmy://:s3cret@db/x", "mysql+asyncmy://:***@db/x"),
        ("mysql+asyncmy://root@db/x", "mysql+asyncmy://root@db/x"),
        (
            "sqlite+aiosqlite:////var/lib/mservices/db.sqlite",
            "sqlite+aiosqlite:////var/lib/mservices/db.sqlite",
        ),
    ],
)
def test_mask_url_hides_the_password_and_keeps_the_rest(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert mask_url(make_url(url)) == masked


def test_mask_url_hides_the_password_of_a_url_it_cannot_parse() -> None:
    masked = mask_url("://root:s3cret@db/x")

    assert "s3cret" not in masked
    assert masked == "://root:***@db/x"


def test_mask_url_hides_every_character_of_a_password_with_an_unescaped_at_sign() -> None:
    masked = mask_url("mysql+asyncmy://root:p@ss@db/x")

    assert "ss@" not in masked


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///x.db", True),
        ("sqlite+aiosqlite://", True),
        ("mysql+asyncmy://root@db/x", False),
        ("mariadb+asyncmy://root@db/x", False),
    ],
)
def test_is_sqlite_tells_sqlite_urls_apart(url: str, expected: bool) -> None:
    assert is_sqlite(url) is expected


async def test_sqlite_connections_enforce_foreign_keys_and_use_wal(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as connection:
            foreign_keys = await connection.scalar(text("PRAGMA foreign_keys"))
            journal_mode = await connection.scalar(text("PRAGMA journal_mode"))
            busy_timeout = await connection.scalar(text("PRAGMA busy_timeout"))
    finally:
        await engine.dispose()

    assert foreign_keys == 1
    assert journal_mode == "wal"
    assert busy_timeout == 30000


async def test_every_pooled_sqlite_connection_enforces_foreign_keys(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as first, engine.connect() as second:
            values = [
                await first.scalar(text("PRAGMA foreign_keys")),
                await second.scalar(text("PRAGMA foreign_keys")),
            ]
    finally:
        await engine.dispose()

    assert values == [1, 1]


@pytest.mark.mariadb
async def test_mariadb_connections_speak_utf8mb4(mysql_url: str) -> None:
    engine = create_engine(mysql_url)
    try:
        async with engine.connect() as connection:
            charset = await connection.scalar(text("SELECT @@character_set_connection"))
    finally:
        await engine.dispose()

    assert charset == "utf8mb4"


async def test_session_objects_stay_usable_after_commit(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with make_session_factory(engine)() as session:
            role = Role(name="seller")
            session.add(role)
            await session.commit()
            # expire_on_commit=False: reading an attribute needs no (lazy, async-unsafe) reload.
            assert role.name == "seller"
            assert role.id is not None
            await session.delete(role)
            await session.commit()
    finally:
        await engine.dispose()

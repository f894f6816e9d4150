"""ping: one round trip that proves the database answers, or DatabaseUnavailable, quickly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from repositories.db import create_engine
from repositories.errors import DatabaseUnavailable
from repositories.health import ping


async def test_ping_succeeds_on_a_database_that_answers(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await ping(engine)
    finally:
        await engine.dispose()


async def test_ping_of_an_unreachable_server_is_database_unavailable_at_once() -> None:
    engine = create_engine("mysql+asyncmy://root:secret@127.0.0.1:1/x")
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable) as unavailable:
            await ping(engine)
    finally:
        await engine.dispose()

    assert time.monotonic() - started < 2
    assert "secret" not in str(unavailable.value)


async def aiosqlite_workers_finished() -> None:
    """Wait for aiosqlite's worker threads to end.

    When a connection fails to open, aiosqlite (0.22) stops its worker thread with a future
    nobody awaits; if the test's event loop closes first, the thread's ``call_soon_threadsafe``
    raises "Event loop is closed" and pytest reports it against a later test.
    """
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 5)


async def test_ping_of_a_missing_sqlite_directory_is_database_unavailable(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}")
    try:
        with pytest.raises(DatabaseUnavailable, match="unable to open database file"):
            await ping(engine)
    finally:
        await engine.dispose()
        await aiosqlite_workers_finished()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()


async def test_ping_of_a_server_that_never_answers_gives_up_after_the_timeout(
    silent_port: int,
) -> None:
    engine = create_engine(f"mysql+asyncmy://root:secret@127.0.0.1:{silent_port}/x")
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable):
            await ping(engine, timeout=0.3)
    finally:
        await engine.dispose()

    assert 0.25 <= time.monotonic() - started < 2

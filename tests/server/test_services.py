"""Services: the pool the settings describe, and one exit stack for start-up and shutdown (a
failed start closes what it had opened; a failed close still closes the rest)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from server import cli, runtime
from server.background import Background
from server.cli import CommandError
from server.downloads.manager import DownloadManager
from server.realtime.bus import LocalBus
from server.realtime.history import ChatHistory
from server.realtime.redis_bus import RedisBus
from server.security.passwords import PasswordHasher
from server.services import Resources, Services, database_engine, open_services
from server.settings import COOKIE_SECRET_FILE, Settings
from tests.conftest import make_settings, service_url

UNCONTACTED_MYSQL = "mysql+asyncmy://nobody:pw@127.0.0.1:1/never"
"""A MariaDB URL nothing connects to: an engine is created without connecting."""


def pool_of(engine: AsyncEngine) -> QueuePool:
    """The engine's pool (a QueuePool on MariaDB)."""
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool


def limits(engine: AsyncEngine) -> tuple[int, int]:
    """The pool's size and overflow limit (QueuePool keeps the latter private)."""
    pool = pool_of(engine)
    return pool.size(), pool._max_overflow


class Failure(Exception):
    """The failure a test injects."""


@pytest.fixture
def disposed(monkeypatch: pytest.MonkeyPatch) -> list[AsyncEngine]:
    """Every engine disposed during the test, in order."""
    engines: list[AsyncEngine] = []
    dispose = AsyncEngine.dispose

    async def recording(self: AsyncEngine, close: bool = True) -> None:
        engines.append(self)
        await dispose(self, close)

    monkeypatch.setattr(AsyncEngine, "dispose", recording)
    return engines


@pytest.fixture
def hashers(monkeypatch: pytest.MonkeyPatch) -> list[PasswordHasher]:
    """Every password hasher opened during the test."""
    opened: list[PasswordHasher] = []
    init = PasswordHasher.__init__

    def recording(self: PasswordHasher, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(PasswordHasher, "__init__", recording)
    return opened


def hasher_closed(hasher: PasswordHasher) -> bool:
    """Whether the hasher's thread pool was shut down."""
    shut: bool = hasher._pool._shutdown
    return shut


@pytest.fixture
def redis_url() -> str:
    """The test Redis, or skip."""
    return service_url("MSERVICES_TEST_REDIS_URL", "Redis")


def with_redis(settings: Settings, redis_url: str | None) -> Settings:
    """``settings`` with Redis (a namespace of this test's own) when ``redis_url`` is given."""
    if redis_url is None:
        return settings
    prefix = f"services-test-{secrets.token_hex(4)}"
    return settings.model_copy(update={"redis_url": redis_url, "redis_prefix": prefix})


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def maybe_redis(request: pytest.FixtureRequest) -> str | None:
    """No Redis, then the test Redis when configured (more to open, and more tasks to stop)."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


# -- the pool ------------------------------------------------------------------------------


def test_the_pool_defaults_to_ten_connections_and_five_more_under_load(tmp_path: Path) -> None:
    engine = database_engine(make_settings(tmp_path, UNCONTACTED_MYSQL))
    assert limits(engine) == (10, 5)


async def test_open_services_builds_its_engine_with_the_configured_pool(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, UNCONTACTED_MYSQL, db_pool_size=3, db_max_overflow=2, db_connect_timeout=7
    )
    services = await open_services(settings)
    try:
        assert limits(services.engine) == (3, 2)
        assert pool_of(services.engine).timeout() == 7
    finally:
        await services.close()


def test_serve_serves_with_the_configured_pool(
    tmp_path: Path, mysql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine ``mservices serve`` checks the schema with is the one its services use."""
    for name in ("DATABASE_URL", "COOKIE_SECRET", "DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DATA_DIR"):
        monkeypatch.delenv(f"MSERVICES_{name}", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("MSERVICES_DATABASE_URL", mysql_url)
    monkeypatch.setenv("MSERVICES_COOKIE_SECRET", secrets.token_hex(32))
    monkeypatch.setenv("MSERVICES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MSERVICES_DB_POOL_SIZE", "4")
    monkeypatch.setenv("MSERVICES_DB_MAX_OVERFLOW", "1")
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    seen: list[tuple[int, int]] = []

    async def fake_open_services(settings: Settings, *, engine: AsyncEngine) -> Services:
        seen.append(limits(engine))
        raise CommandError("stop before serving")

    monkeypatch.setattr("server.runtime.open_services", fake_open_services)
    assert cli.main(["serve", "--port", "1"]) == 1
    assert seen == [(4, 1)]


# -- a failed start-up closes what it had opened ----------------------------------------------


async def test_an_unreadable_cookie_secret_stops_start_up_before_anything_opens(
    tmp_path: Path, disposed: list[AsyncEngine], hashers: list[PasswordHasher]
) -> None:
    settings = make_settings(tmp_path, "", cookie_secret=None)  # the embedded database
    (settings.data_dir / COOKIE_SECRET_FILE).mkdir(parents=True)  # a directory: unreadable
    before = asyncio.all_tasks()
    with pytest.raises(IsADirectoryError):
        await open_services(settings)
    assert asyncio.all_tasks() == before
    assert hashers == [] and disposed == []


@pytest.mark.parametrize(
    "failing",
    [
        "downloads",  # the last step: everything else is open
        "chat bus",  # half way: the engine, invalidation, history (and presence) are open
    ],
)
async def test_a_step_that_fails_closes_every_step_before_it(
    tmp_path: Path,
    sqlite_url: str,
    maybe_redis: str | None,
    monkeypatch: pytest.MonkeyPatch,
    disposed: list[AsyncEngine],
    hashers: list[PasswordHasher],
    failing: str,
) -> None:
    settings = with_redis(make_settings(tmp_path, sqlite_url), maybe_redis)
    target: type = (
        DownloadManager if failing == "downloads" else LocalBus if maybe_redis is None else RedisBus
    )
    step = "from_settings" if failing == "downloads" else "start"

    def fail(*args: Any, **kwargs: Any) -> None:
        raise Failure(failing)

    monkeypatch.setattr(target, step, fail)
    started: list[asyncio.Task[Any]] = []
    start_history = ChatHistory.start

    def recording_start(self: ChatHistory) -> None:
        start_history(self)
        started.append(self._task)  # type: ignore[arg-type]

    monkeypatch.setattr(ChatHistory, "start", recording_start)
    before = asyncio.all_tasks()
    with pytest.raises(Failure):
        await open_services(settings)
    assert asyncio.all_tasks() == before, "the subscribers, the writer and the heartbeat stopped"
    assert started and all(task.done() for task in started)
    assert len(disposed) == 1, "the engine was disposed"
    assert len(hashers) == 1 and hasher_closed(hashers[0])


async def test_a_failed_start_up_raises_its_own_error_when_a_close_fails_too(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    disposed: list[AsyncEngine],
) -> None:
    async def broken_close(self: ChatHistory) -> None:
        raise Failure("history")

    def broken_downloads(*args: Any, **kwargs: Any) -> None:
        raise Failure("downloads")

    monkeypatch.setattr(ChatHistory, "close", broken_close)
    monkeypatch.setattr(DownloadManager, "from_settings", broken_downloads)
    with caplog.at_level(logging.ERROR, logger="mservices"), pytest.raises(Failure, match="downl"):
        await open_services(make_settings(tmp_path, sqlite_url))
    assert [record.getMessage() for record in caplog.records] == [
        "closing the chat history writer failed"
    ]
    assert len(disposed) == 1, "the closes after the failed one still ran"


# -- close carries on past a failure ------------------------------------------------------


async def test_a_close_that_fails_leaves_the_others_closed_and_is_raised(
    tmp_path: Path,
    sqlite_url: str,
    maybe_redis: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    disposed: list[AsyncEngine],
    hashers: list[PasswordHasher],
) -> None:
    async def broken_drain(self: Background, timeout: float) -> None:
        raise Failure("background")

    # Half way down the closes; by then downloads.close has stopped the only periodic work.
    monkeypatch.setattr(Background, "drain", broken_drain)
    settings = with_redis(make_settings(tmp_path, sqlite_url), maybe_redis)
    before = asyncio.all_tasks()
    services = await open_services(settings)
    with (
        caplog.at_level(logging.ERROR, logger="mservices"),
        pytest.raises(ExceptionGroup) as raised,
    ):
        await services.close()
    assert [str(error) for error in raised.value.exceptions] == ["background"]
    failed = [record for record in caplog.records if record.name == "mservices"]
    assert [record.getMessage() for record in failed] == ["closing the background work failed"]
    assert failed[0].exc_info is not None, "logged with its traceback"
    assert asyncio.all_tasks() == before, "the subscribers, the writer, the heartbeat stopped"
    assert disposed == [services.engine], "closed after the failed step"
    assert hasher_closed(hashers[0])


async def test_every_failing_close_is_logged_and_raised_together(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    disposed: list[AsyncEngine],
) -> None:
    async def broken_history(self: ChatHistory) -> None:
        raise Failure("history")

    async def broken_downloads(self: DownloadManager) -> None:
        raise Failure("downloads")

    monkeypatch.setattr(ChatHistory, "close", broken_history)
    monkeypatch.setattr(DownloadManager, "close", broken_downloads)
    services = await open_services(make_settings(tmp_path, sqlite_url))
    with (
        caplog.at_level(logging.ERROR, logger="mservices"),
        pytest.raises(ExceptionGroup) as raised,
    ):
        await services.close()
    assert [str(error) for error in raised.value.exceptions] == ["downloads", "history"]
    assert [record.getMessage() for record in caplog.records if record.name == "mservices"] == [
        "closing the downloads failed",
        "closing the chat history writer failed",
    ]
    assert disposed == [services.engine]
    await services.close()  # a second close has nothing left to do


async def test_closing_services_twice_closes_once(
    tmp_path: Path, sqlite_url: str, disposed: list[AsyncEngine]
) -> None:
    services = await open_services(make_settings(tmp_path, sqlite_url))
    await services.close()
    await services.close()
    assert disposed == [services.engine]


async def no_stop_signal() -> None:
    """Stop at once, as if SIGTERM had come."""


async def test_serve_ends_with_one_line_when_a_service_fails_to_close(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_close(self: ChatHistory) -> None:
        raise Failure("history")

    monkeypatch.setattr(runtime, "until_stop_signal", no_stop_signal)
    monkeypatch.setattr(ChatHistory, "close", broken_close)
    settings = make_settings(tmp_path, sqlite_url)
    engine = database_engine(settings)
    try:
        with pytest.raises(CommandError, match=r"^stopped, but 1 service\(s\) failed to close"):
            await runtime.serve(settings, engine, host="127.0.0.1", port=0)
    finally:
        await engine.dispose()


async def test_serve_reports_its_own_failure_over_a_failed_close(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_close(self: ChatHistory) -> None:
        raise Failure("history")

    monkeypatch.setattr(ChatHistory, "close", broken_close)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(tmp_path, sqlite_url, tcp_port=taken.getsockname()[1])
        engine = database_engine(settings)
        try:
            with pytest.raises(CommandError, match=r"^cannot listen for the TCP chat"):
                await runtime.serve(settings, engine, host="127.0.0.1", port=0)
        finally:
            await engine.dispose()


# -- Resources ----------------------------------------------------------------------------


async def test_resources_close_last_first_sync_and_async_alike() -> None:
    resources = Resources()
    calls: list[str] = []

    async def close_async(name: str) -> None:
        await asyncio.sleep(0)
        calls.append(name)

    resources.on_close("first", lambda: calls.append("first"))
    resources.on_close("second", lambda: close_async("second"))
    resources.on_close("third", lambda: calls.append("third"))
    await resources.close()
    assert calls == ["third", "second", "first"]


async def test_resources_keep_closing_after_a_cancelled_close() -> None:
    resources = Resources()
    calls: list[str] = []

    async def cancelled() -> None:
        raise asyncio.CancelledError

    resources.on_close("first", lambda: calls.append("first"))
    resources.on_close("cancelled", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await resources.close()
    assert calls == ["first"]

"""Download quotas against a real local upstream and real files: the per-user concurrency cap,
the daily cap counted in the database (both backends), the disk cap at start and mid-download,
and the expiry of saved files with an injected clock and sleep (no waiting on real time)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.audit import AuditRepository
from repositories.downloads import DOWNLOAD_STARTED
from repositories.users import UserRepository
from server.background import Background
from server.downloads.errors import (
    DiskCap,
    ForbiddenAddress,
    UserConcurrencyCap,
    UserDailyCap,
)
from server.downloads.manager import EXPIRY_INTERVAL, TEMPORARY_PREFIX
from server.downloads.quotas import DAY_SECONDS, DailyQuota, Quotas
from server.downloads.records import Download, State
from server.services import open_services
from tests.conftest import make_settings
from tests.server.downloads.conftest import (
    CHUNK,
    WAIT_LIMIT,
    Upstream,
    chinese,
    finished,
    managed,
    payload,
    wait_until,
)

OWNER = 1
OTHER = 2
T0 = 1_700_000_000.0
"""An arbitrary moment (seconds since the epoch) the injected clocks start at."""


class Clock:
    """A wall clock a test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Ticks:
    """A ``sleep`` for the expiry loop: reports each wait and returns when the test says so."""

    def __init__(self) -> None:
        self.asked: asyncio.Queue[float] = asyncio.Queue()
        self.release: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        await self.asked.put(seconds)
        await self.release.get()

    async def next_wait(self) -> float:
        """The next wait the loop asks for (so the sweep before it is over)."""
        async with asyncio.timeout(WAIT_LIMIT):
            return await self.asked.get()


def save(directory: Path, name: str, size: int, *, age: float = 0.0, now: float = T0) -> Path:
    """A file of ``size`` bytes in ``directory`` last modified ``age`` seconds before ``now``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age, now - age))
    return path


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


# -- per-user concurrency ---------------------------------------------------------------------


async def test_a_user_may_have_only_so_many_downloads_running_or_queued(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with managed(
        tmp_path / "downloads", concurrency=2, quotas=Quotas(user_concurrency=3)
    ) as manager:
        held = [
            await manager.start(OWNER, upstream.url(f"/gated/u/40000?n={index}"), f"{index}.bin")
            for index in range(3)
        ]
        assert [record.state for record in held].count(State.QUEUED) == 1
        with pytest.raises(UserConcurrencyCap) as refused:
            await manager.start(OWNER, upstream.url("/bytes/10/fourth"))
        assert (refused.value.status, refused.value.code) == (429, "user_concurrency_cap")
        assert str(refused.value.message).startswith("at most 3 downloads at once per user")
        assert chinese(refused.value.message).startswith("每个用户最多同时进行 3 个下载")
        assert int(refused.value.headers["Retry-After"]) > 0
        other = await manager.start(OTHER, upstream.url("/bytes/10/theirs"))
        upstream.gate("u").set()
        for record in [*held, other]:
            assert (await finished(manager, record)).state is State.DONE, record.error
        again = await manager.start(OWNER, upstream.url("/bytes/10/again"))
        assert (await finished(manager, again)).state is State.DONE
        assert manager.ended["refused"] == 1


async def test_racing_starts_of_one_user_cannot_pass_the_concurrency_cap(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with managed(tmp_path / "downloads", quotas=Quotas(user_concurrency=3)) as manager:
        url = upstream.url("/gated/race/40000")
        outcomes = await asyncio.gather(
            *(manager.start(OWNER, url, f"r{index}") for index in range(10)),
            return_exceptions=True,
        )
        started = [outcome for outcome in outcomes if isinstance(outcome, Download)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, UserConcurrencyCap)]
        assert (len(started), len(refused)) == (3, 7), outcomes
        upstream.gate("race").set()
        for record in started:
            assert (await finished(manager, record)).state is State.DONE, record.error


# -- disk cap ---------------------------------------------------------------------------------


async def test_a_start_is_refused_while_the_directory_holds_the_cap(
    tmp_path: Path, upstream: Upstream
) -> None:
    directory = tmp_path / "downloads"
    save(directory, "old.bin", 10_000)
    async with managed(directory, quotas=Quotas(disk_max_bytes=10_000)) as manager:
        with pytest.raises(DiskCap) as refused:
            await manager.start(OWNER, upstream.url("/bytes/10/more"))
        assert (refused.value.status, refused.value.code) == (507, "disk_cap")
        assert "at most 10000 bytes" in str(refused.value.message)
        assert "下载目录最多容纳 10000 字节" in chinese(refused.value.message)
        assert manager.list(OWNER) == []
        (directory / "old.bin").unlink()
        record = await manager.start(OWNER, upstream.url("/bytes/10/more"))
        assert (await finished(manager, record)).state is State.DONE


async def test_a_saved_download_counts_against_the_cap_of_the_next_start(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with managed(tmp_path / "downloads", quotas=Quotas(disk_max_bytes=10_000)) as manager:
        record = await manager.start(OWNER, upstream.url("/bytes/10000/full.bin"))
        assert (await finished(manager, record)).state is State.DONE, record.error
        assert manager.disk.used == 10_000
        with pytest.raises(DiskCap):
            await manager.start(OWNER, upstream.url("/bytes/1/one.bin"))


@pytest.mark.parametrize("query", ["?chunked=1", ""], ids=["streamed", "announced"])
async def test_a_download_that_would_pass_the_disk_cap_is_cut_and_fails(
    tmp_path: Path, upstream: Upstream, query: str
) -> None:
    directory = tmp_path / "downloads"
    save(directory, "kept.bin", 50_000)
    async with managed(directory, quotas=Quotas(disk_max_bytes=100_000)) as manager:
        record = await manager.start(OWNER, upstream.url("/bytes/60000/big.bin" + query))
        await finished(manager, record)
        assert (record.state, record.error_code, record.error_status) == ("failed", "disk_cap", 507)
        assert record.error is not None
        assert "at most 100000 bytes" in str(record.error)
        assert chinese(record.error) == "下载目录最多容纳 100000 字节；这个下载会超出上限"
        assert names_in(directory) == ["kept.bin"]
        assert manager.disk.used == 50_000
        fits = await manager.start(OWNER, upstream.url("/bytes/50000/fits.bin" + query))
        assert (await finished(manager, fits)).state is State.DONE, fits.error


async def test_downloads_running_together_never_fill_the_directory_past_the_cap(
    tmp_path: Path, upstream: Upstream
) -> None:
    directory = tmp_path / "downloads"
    async with managed(directory, quotas=Quotas(disk_max_bytes=100_000)) as manager:
        records = [
            await manager.start(OWNER, upstream.url(f"/gated/both/60000?n={index}"), f"{index}")
            for index in range(2)
        ]
        await wait_until(
            lambda: all(record.bytes >= CHUNK for record in records), "both first chunks arrive"
        )
        upstream.gate("both").set()
        for record in records:
            await finished(manager, record)
        states = sorted((record.state.value, record.error_code) for record in records)
        assert states == [("done", None), ("failed", "disk_cap")]
        saved = [path.stat().st_size for path in directory.iterdir()]
        assert saved == [60_000]
        assert manager.disk.used == 60_000


# -- daily cap (in the database) --------------------------------------------------------------


async def add_users(sessions: async_sessionmaker[AsyncSession], *names: str) -> list[int]:
    async with sessions() as session, session.begin():
        users = UserRepository(session)
        return [(await users.add(name=name, password_hash="x")).id for name in names]


async def test_the_daily_cap_counts_starts_in_a_rolling_day(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    alice, bob = await add_users(sessions, "alice", "bob")
    clock = Clock()
    quota = DailyQuota(sessions, 3, clock=clock)
    for offset in (0, 100, 200):
        clock.now = T0 + offset
        await quota.admit(alice, f"http://example.com/{offset}", actor="alice", client_ip="::1")
    clock.now = T0 + 1000
    with pytest.raises(UserDailyCap) as refused:
        await quota.admit(alice, "http://example.com/fourth")
    assert (refused.value.status, refused.value.code) == (429, "user_daily_cap")
    assert str(refused.value.message).startswith("at most 3 downloads per user in 24 hours")
    assert chinese(refused.value.message) == (
        f"每个用户 24 小时内最多下载 3 次；{int(DAY_SECONDS) - 1000} 秒后才能再下载"
    )
    assert refused.value.headers["Retry-After"] == str(int(DAY_SECONDS) - 1000)
    await quota.admit(bob, "http://example.com/bob")
    clock.now = T0 + DAY_SECONDS - 1
    with pytest.raises(UserDailyCap) as still:
        await quota.admit(alice, "http://example.com/fourth")
    assert still.value.headers["Retry-After"] == "1"
    clock.now = T0 + DAY_SECONDS
    await quota.admit(alice, "http://example.com/next-day")


async def test_the_daily_count_is_shared_by_every_process_and_survives_a_restart(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    (alice,) = await add_users(sessions, "alice")
    clock = Clock()
    await DailyQuota(sessions, 2, clock=clock).admit(alice, "http://example.com/1")
    await DailyQuota(sessions, 2, clock=clock).admit(alice, "http://example.com/2")
    with pytest.raises(UserDailyCap):
        await DailyQuota(sessions, 2, clock=clock).admit(alice, "http://example.com/3")
    async with sessions() as session:
        rows = await AuditRepository(session).list(action=DOWNLOAD_STARTED)
    assert [(row.user_id, row.detail) for row in rows] == [
        (alice, "http://example.com/2"),
        (alice, "http://example.com/1"),
    ]


async def test_racing_starts_cannot_pass_the_daily_cap(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    users = await add_users(sessions, *(f"user{number}" for number in range(10)))
    quotas = [DailyQuota(sessions, 3, clock=Clock()) for _ in range(2)]  # two "processes"
    for round_number in range(20):
        # Rounds 0-9: a new user each (their first starts race to create their lock row);
        # rounds 10-19: the same users again, on a later day.
        user = users[round_number % 10]
        for quota in quotas:
            quota.clock = Clock(T0 + round_number * DAY_SECONDS)
        outcomes = await asyncio.gather(
            *(quotas[index % 2].admit(user, f"http://x/{index}") for index in range(8)),
            return_exceptions=True,
        )
        admitted = [outcome for outcome in outcomes if outcome is None]
        refused = [outcome for outcome in outcomes if isinstance(outcome, UserDailyCap)]
        assert (len(admitted), len(refused)) == (3, 5), outcomes


async def test_the_manager_records_a_start_only_once_every_other_check_passed(
    tmp_path: Path, upstream: Upstream, sessions: async_sessionmaker[AsyncSession]
) -> None:
    (alice,) = await add_users(sessions, "alice")
    daily = DailyQuota(sessions, 2)
    async with managed(
        tmp_path / "downloads", allow="", quotas=Quotas(user_concurrency=1), daily=daily
    ) as strict:
        with pytest.raises(ForbiddenAddress):
            await strict.start(alice, upstream.url("/bytes/10"))
    async with managed(tmp_path / "downloads", quotas=Quotas(user_concurrency=1), daily=daily) as m:
        held = await m.start(alice, upstream.url("/gated/d/40000"), "held")
        with pytest.raises(UserConcurrencyCap):
            await m.start(alice, upstream.url("/bytes/10"))
        upstream.gate("d").set()
        assert (await finished(m, held)).state is State.DONE
        second = await m.start(alice, upstream.url("/bytes/10/second"), actor="alice")
        assert (await finished(m, second)).state is State.DONE
        with pytest.raises(UserDailyCap):
            await m.start(alice, upstream.url("/bytes/10/third"))
        assert m.ended["refused"] == 2
    async with sessions() as session:
        rows = await AuditRepository(session).list(action=DOWNLOAD_STARTED)
    assert [(row.actor, row.detail) for row in rows] == [
        ("alice", upstream.url("/bytes/10/second")),
        (None, upstream.url("/gated/d/40000")),
    ]


# -- expiry -----------------------------------------------------------------------------------


async def test_expiry_deletes_old_saved_files_and_never_partial_ones(
    tmp_path: Path, upstream: Upstream
) -> None:
    directory = tmp_path / "downloads"
    keep = 7 * DAY_SECONDS
    clock = Clock()
    save(directory, "old.bin", 100, age=keep + 1)
    save(directory, "fresh.bin", 100, age=keep - 1)
    async with managed(directory, quotas=Quotas(keep_seconds=keep), clock=clock) as manager:
        running = await manager.start(OWNER, upstream.url("/gated/keep/40000"), "running.bin")
        partial = directory / f"{TEMPORARY_PREFIX}{running.id}"
        save(directory, f"{TEMPORARY_PREFIX}elsewhere", 100, age=keep * 2)  # another process's
        await wait_until(lambda: running.bytes >= CHUNK, "the first chunk arrives")
        os.utime(partial, (T0 - keep * 2, T0 - keep * 2))
        assert await manager.expire() == 1
        assert names_in(directory) == sorted(
            [f"{TEMPORARY_PREFIX}elsewhere", partial.name, "fresh.bin"]
        )
        assert manager.disk.used >= 200  # the directory was measured again
        upstream.gate("keep").set()
        assert (await finished(manager, running)).state is State.DONE, running.error
        assert (directory / "running.bin").read_bytes() == payload(40000)
        clock.now = T0 + 2  # fresh.bin is now one second too old
        assert await manager.expire() == 1
        assert "fresh.bin" not in names_in(directory)


async def test_expiry_runs_at_start_and_then_every_hour_until_close(tmp_path: Path) -> None:
    directory = tmp_path / "downloads"
    keep = DAY_SECONDS
    clock, ticks, background = Clock(), Ticks(), Background()
    save(directory, "old.bin", 10, age=keep + 1)
    async with managed(
        directory, quotas=Quotas(keep_seconds=keep), clock=clock, sleep=ticks.sleep
    ) as manager:
        expiry = manager.start_expiry(background)
        assert await ticks.next_wait() == EXPIRY_INTERVAL
        assert names_in(directory) == []
        save(directory, "later.bin", 10, age=0)
        clock.now = T0 + keep + 1
        await ticks.release.put(None)
        assert await ticks.next_wait() == EXPIRY_INTERVAL
        assert names_in(directory) == []
        assert len(background) == 0, "periodic work is not one-off work waiting to finish"
        assert not expiry.done()
    assert expiry.cancelled(), "close stops the sweep"


async def test_the_services_sweep_expired_downloads_when_they_open(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = make_settings(tmp_path, sqlite_url, download_keep_days=1)
    directory = settings.effective_download_dir
    now = time.time()
    save(directory, "stale.bin", 10, age=2 * DAY_SECONDS, now=now)
    save(directory, "recent.bin", 10, age=0, now=now)
    services = await open_services(settings)
    try:
        await wait_until(lambda: names_in(directory) == ["recent.bin"], "stale.bin is deleted")
    finally:
        await services.close()

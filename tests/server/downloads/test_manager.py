"""DownloadManager against a real local upstream: saving, every failure, progress, cancel, the
concurrency cap, no overwrite and shutdown."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from repositories.errors import NotFound
from server.downloads.errors import ForbiddenAddress, InvalidUrl, QueueFull
from server.downloads.manager import DownloadManager
from server.downloads.records import State
from tests.server.downloads.conftest import (
    CHUNK,
    Upstream,
    download_once,
    finished,
    make_manager,
    managed,
    payload,
    wait_until,
)

OWNER = 1


def files_in(directory: Path) -> list[str]:
    """Every entry of the downloads directory, partial files included."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


async def test_a_download_is_saved_under_its_name(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/bytes/100000/data.bin"))
    assert record.state in (State.QUEUED, State.RUNNING)
    await finished(manager, record)
    assert record.state is State.DONE, record.error
    assert (record.bytes, record.total) == (100000, 100000)
    assert (manager.directory / "data.bin").read_bytes() == payload(100000)
    assert files_in(manager.directory) == ["data.bin"]
    assert record.finished_at is not None


async def test_a_body_without_length_is_saved_too(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/bytes/70000?chunked=1"), "c.bin")
    await finished(manager, record)
    assert record.state is State.DONE, record.error
    assert record.total is None
    assert (manager.directory / "c.bin").read_bytes() == payload(70000)


async def test_refusals_happen_before_anything_starts(tmp_path: Path, upstream: Upstream) -> None:
    async with managed(tmp_path / "downloads", allow="") as strict:
        with pytest.raises(ForbiddenAddress):
            await strict.start(OWNER, upstream.url("/bytes/10"))
        with pytest.raises(InvalidUrl):
            await strict.start(OWNER, "gopher://127.0.0.1/")
        assert strict.list(OWNER) == []
        assert files_in(tmp_path / "downloads") == []


async def test_an_announced_oversize_body_is_refused_before_reading_it(
    tmp_path: Path, upstream: Upstream
) -> None:
    record = await download_once(
        tmp_path / "downloads", upstream.url("/bytes/50001/big"), max_bytes=50000
    )
    assert (record.state, record.error_code, record.error_status) == ("failed", "too_large", 413)
    assert record.bytes == 0
    assert files_in(tmp_path / "downloads") == []


async def test_an_unannounced_oversize_body_is_cut_off_at_the_cap(
    tmp_path: Path, upstream: Upstream
) -> None:
    record = await download_once(
        tmp_path / "downloads", upstream.url("/bytes/500000/big?chunked=1"), max_bytes=50000
    )
    assert (record.state, record.error_code) == ("failed", "too_large")
    assert 50000 < record.bytes < 500000
    assert files_in(tmp_path / "downloads") == []


async def test_a_body_of_exactly_the_cap_is_saved(tmp_path: Path, upstream: Upstream) -> None:
    record = await download_once(
        tmp_path / "downloads", upstream.url("/bytes/50000/edge?chunked=1"), max_bytes=50000
    )
    assert record.state is State.DONE, record.error


async def test_a_slow_upstream_times_out(tmp_path: Path, upstream: Upstream) -> None:
    record = await download_once(tmp_path / "downloads", upstream.url("/silent"), timeout=0.5)
    assert (record.state, record.error_code, record.error_status) == (
        "failed",
        "upstream_timeout",
        504,
    )
    assert files_in(tmp_path / "downloads") == []


async def test_redirects_to_allowed_addresses_are_followed(
    manager: DownloadManager, upstream: Upstream
) -> None:
    target = upstream.url("/bytes/1234/final.bin")
    hop = upstream.url("/redirect?to=" + quote(target, safe=""))
    record = await manager.start(OWNER, upstream.url("/redirect?to=" + quote(hop, safe="")))
    await finished(manager, record)
    assert record.state is State.DONE, record.error
    assert record.bytes == 1234


@pytest.mark.parametrize(
    "private", ["http://10.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]:1/"]
)
async def test_a_redirect_to_a_private_address_is_refused(
    manager: DownloadManager, upstream: Upstream, private: str
) -> None:
    record = await manager.start(OWNER, upstream.url("/redirect?to=" + quote(private, safe="")))
    await finished(manager, record)
    assert (record.state, record.error_code, record.error_status) == (
        "failed",
        "forbidden_address",
        403,
    )


async def test_a_redirect_to_another_scheme_is_refused(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/redirect?to=file:///etc/passwd"))
    await finished(manager, record)
    assert (record.state, record.error_code) == ("failed", "invalid_scheme")


async def test_more_than_five_redirects_fail(manager: DownloadManager, upstream: Upstream) -> None:
    url = upstream.url("/bytes/10")
    for _ in range(6):
        url = upstream.url("/redirect?to=" + quote(url, safe=""))
    record = await manager.start(OWNER, url)
    await finished(manager, record)
    assert (record.state, record.error_code) == ("failed", "too_many_redirects")


async def test_exactly_five_redirects_are_followed(
    manager: DownloadManager, upstream: Upstream
) -> None:
    url = upstream.url("/bytes/10")
    for _ in range(5):
        url = upstream.url("/redirect?to=" + quote(url, safe=""))
    record = await manager.start(OWNER, url)
    await finished(manager, record)
    assert record.state is State.DONE, record.error


async def test_an_upstream_error_status_is_reported(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/status/404"))
    await finished(manager, record)
    assert (record.state, record.error_code, record.error_status, record.upstream_status) == (
        "failed",
        "upstream_error",
        502,
        404,
    )
    assert files_in(manager.directory) == []


async def test_an_unreachable_upstream_is_reported(manager: DownloadManager) -> None:
    record = await manager.start(OWNER, "http://127.0.0.1:1/nothing-listens")
    await finished(manager, record)
    assert (record.state, record.error_code) == ("failed", "upstream_unreachable")


async def test_progress_is_visible_while_running_and_cancel_deletes_the_partial_file(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/gated/a/200000?length=1"), "held.bin")
    await wait_until(lambda: record.bytes >= CHUNK, "the first chunk arrives")
    assert (record.state, record.total) == (State.RUNNING, 200000)
    assert files_in(manager.directory) == [f".part-{record.id}"]
    await manager.cancel(OWNER, record.id)
    assert record.state is State.CANCELLED
    assert record.error_code == "cancelled"
    assert files_in(manager.directory) == []
    assert manager.get(OWNER, record.id) is record


async def test_cancelling_a_finished_download_forgets_it_and_keeps_the_file(
    manager: DownloadManager, upstream: Upstream
) -> None:
    record = await manager.start(OWNER, upstream.url("/bytes/10/kept"))
    await finished(manager, record)
    await manager.cancel(OWNER, record.id)
    with pytest.raises(NotFound):
        manager.get(OWNER, record.id)
    assert files_in(manager.directory) == ["kept"]


async def test_beyond_the_cap_downloads_queue_then_are_refused(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with managed(tmp_path / "downloads", concurrency=1) as capped:
        first = await capped.start(OWNER, upstream.url("/gated/one/40000"))
        await wait_until(lambda: first.bytes > 0, "the first download runs")
        second = await capped.start(OWNER, upstream.url("/bytes/10/second"))
        with pytest.raises(QueueFull) as refused:
            await capped.start(OWNER, upstream.url("/bytes/10/third"))
        assert refused.value.status == 429
        assert refused.value.headers["Retry-After"]
        assert second.state is State.QUEUED
        upstream.gate("one").set()
        await finished(capped, first)
        await finished(capped, second)
        assert (first.state, second.state) == (State.DONE, State.DONE)


async def test_no_download_overwrites_another_or_an_existing_file(
    manager: DownloadManager, upstream: Upstream
) -> None:
    manager.directory.mkdir(parents=True)
    (manager.directory / "same.bin").write_bytes(b"already here")
    first = await manager.start(OWNER, upstream.url("/bytes/10"), "same.bin")
    second = await manager.start(OWNER, upstream.url("/bytes/20"), "same.bin")
    await finished(manager, first)
    await finished(manager, second)
    assert {first.filename, second.filename} == {"same-1.bin", "same-2.bin"}
    assert (manager.directory / "same.bin").read_bytes() == b"already here"
    assert len((manager.directory / first.filename).read_bytes()) == 10
    assert len((manager.directory / second.filename).read_bytes()) == 20


async def test_hostile_file_names_stay_inside_the_downloads_directory(
    manager: DownloadManager, upstream: Upstream
) -> None:
    names = ["../../etc/passwd", "..\\x", "/abs", "nul\x00byte", "a" * 4000, "..", "../"]
    records = [await manager.start(OWNER, upstream.url("/bytes/5"), name) for name in names]
    for record in records:
        await finished(manager, record)
        assert record.state is State.DONE, record.error
    saved = files_in(manager.directory)
    assert [record.filename for record in records][:4] == ["passwd", "x", "abs", "nulbyte"]
    assert len(saved) == len(names)
    assert all((manager.directory / name).resolve().parent == manager.directory for name in saved)
    assert not any(name.startswith(".") for name in saved)


async def test_owners_see_only_their_own_downloads(
    manager: DownloadManager, upstream: Upstream
) -> None:
    mine = await manager.start(1, upstream.url("/bytes/5"))
    theirs = await manager.start(2, upstream.url("/bytes/5"))
    assert manager.list(1) == [mine]
    assert manager.list(2) == [theirs]
    with pytest.raises(NotFound):
        manager.get(1, theirs.id)
    with pytest.raises(NotFound):
        await manager.cancel(1, theirs.id)
    await finished(manager, mine)
    await finished(manager, theirs)


async def test_shutdown_cancels_running_downloads_and_removes_partial_files(
    tmp_path: Path, upstream: Upstream
) -> None:
    closing = make_manager(tmp_path / "downloads")
    record = await closing.start(OWNER, upstream.url("/gated/shut/100000"))
    await wait_until(lambda: record.bytes > 0, "the download runs")
    await closing.close()
    assert record.state is State.CANCELLED
    assert files_in(tmp_path / "downloads") == []
    with pytest.raises(Exception, match="shutting down"):
        await closing.start(OWNER, upstream.url("/bytes/5"))

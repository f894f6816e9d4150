"""A real upstream for download tests: a Tornado app on 127.0.0.1 serving files, slow and gated
bodies, redirects, error statuses and a server that never answers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tornado.iostream import StreamClosedError
from tornado.web import Application, RequestHandler

from schemas.text import Text
from server.downloads.guard import AddressPolicy, UrlGuard
from server.downloads.manager import DownloadManager
from server.downloads.quotas import Quotas
from server.downloads.records import Download
from server.downloads.transfer import Limits
from server.i18n import locale_for, translate
from server.settings import Settings
from tests.conftest import serve_app

CHUNK = 16 * 1024
WAIT_LIMIT = 20.0
ROOMY = Quotas(user_concurrency=1000, disk_max_bytes=1 << 40)
"""Quotas no test reaches unless it means to."""
"""How long a test waits for a state before it fails (a hang guard, not a timing assertion)."""


def chinese(message: Text | str) -> str:
    """A download's reason as a Chinese reader gets it (the default language)."""
    return translate(locale_for("zh_CN"), message)


def payload(size: int) -> bytes:
    """``size`` deterministic, non-repeating-looking bytes."""
    blocks = bytearray()
    counter = 0
    while len(blocks) < size:
        blocks += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(blocks[:size])


@dataclass
class Upstream:
    """The upstream's base URL and the gates tests open to let a held body finish."""

    base_url: str = ""
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on the upstream."""
        return self.base_url + path

    def gate(self, name: str) -> asyncio.Event:
        """The gate ``name`` (created closed)."""
        return self.gates.setdefault(name, asyncio.Event())

    def open_all(self) -> None:
        """Let every held response finish."""
        for event in self.gates.values():
            event.set()


class _Handler(RequestHandler):
    def initialize(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def send(self, body: bytes, *, length: bool) -> None:
        if length:
            self.set_header("Content-Length", str(len(body)))
        for start in range(0, len(body), CHUNK):
            self.write(body[start : start + CHUNK])
            await self.flush()


class BytesHandler(_Handler):
    """``/bytes/N[/name]``: N bytes with a Content-Length; ``?chunked=1`` without one."""

    async def get(self, size: str, name: str | None = None) -> None:
        self.upstream.hosts.append(self.request.host)
        with suppress(StreamClosedError):  # the client stopped reading (cap, cancel): expected
            await self.send(payload(int(size)), length=not self.get_argument("chunked", ""))


class GatedHandler(_Handler):
    """``/gated/NAME/N``: the first chunk of N bytes (no Content-Length unless ``?length=1``),
    then the rest once the test opens gate NAME."""

    async def get(self, name: str, size: str) -> None:
        body = payload(int(size))
        if self.get_argument("length", ""):
            self.set_header("Content-Length", str(len(body)))
        with suppress(StreamClosedError):
            self.write(body[:CHUNK])
            await self.flush()
            await self.upstream.gate(name).wait()
            self.write(body[CHUNK:])
            await self.flush()


class RedirectHandler(_Handler):
    """``/redirect?to=URL``: 302 to URL."""

    def get(self) -> None:
        self.redirect(self.get_argument("to"), status=302)


class StatusHandler(_Handler):
    """``/status/CODE``: that status with a small body."""

    def get(self, code: str) -> None:
        self.set_status(int(code))
        self.finish(b"upstream error page")


class SilentHandler(_Handler):
    """``/silent``: never answers until every gate opens (the test's end)."""

    async def get(self) -> None:
        await self.upstream.gate("silent").wait()
        self.finish(b"late")


@asynccontextmanager
async def serve_upstream() -> AsyncIterator[Upstream]:
    """A live upstream on 127.0.0.1; held responses are released at the end."""
    state = Upstream()
    deps = {"upstream": state}
    app = Application(
        [
            (r"/bytes/([0-9]+)(?:/(.+))?", BytesHandler, deps),
            (r"/gated/(\w+)/([0-9]+)", GatedHandler, deps),
            (r"/redirect", RedirectHandler, deps),
            (r"/status/([0-9]{3})", StatusHandler, deps),
            (r"/silent", SilentHandler, deps),
        ]
    )
    server, state.base_url = await serve_app(app)
    try:
        yield state
    finally:
        state.open_all()
        server.stop()
        await server.close_all_connections()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """The upstream of ``serve_upstream`` for one test."""
    async with serve_upstream() as state:
        yield state


def make_manager(
    directory: Path,
    *,
    max_bytes: int = 1024 * 1024,
    timeout: float = 30.0,
    concurrency: int = 4,
    allow: str = "127.0.0.1",
    pool: ThreadPoolExecutor | None = None,
    quotas: Quotas = ROOMY,
    **extra: Any,
) -> DownloadManager:
    """A manager on ``directory`` allowing the local upstream (settings parse ``allow``), with
    ``quotas`` (default: none that a test would reach) and ``extra`` keyword arguments."""
    settings = Settings(_env_file=None, download_allow=allow)  # type: ignore[call-arg]
    policy = AddressPolicy(settings.download_allow)
    return DownloadManager(
        directory,
        UrlGuard(policy),
        Limits(max_bytes, timeout),
        concurrency=concurrency,
        pool=pool,
        quotas=quotas,
        **extra,
    )


@asynccontextmanager
async def managed(directory: Path, **options: Any) -> AsyncIterator[DownloadManager]:
    """``make_manager(directory, **options)``, closed on exit."""
    opened = make_manager(directory, **options)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[DownloadManager]:
    """A manager saving into ``tmp_path/downloads``, closed after the test."""
    async with managed(tmp_path / "downloads") as opened:
        yield opened


async def download_once(directory: Path, url: str, **options: Any) -> Download:
    """Run one download of ``url`` to its end on a fresh manager with ``options``."""
    async with managed(directory, **options) as opened:
        return await finished(opened, await opened.start(1, url))


async def wait_until(check: Callable[[], bool], what: str) -> None:
    """Yield to the loop until ``check()`` holds; fail (not a timing assertion: a hang guard)
    after ``WAIT_LIMIT`` seconds."""
    async with asyncio.timeout(WAIT_LIMIT):
        while not check():  # noqa: ASYNC110 - progress has no event; polled as the page does
            await asyncio.sleep(0.01)
    assert check(), what


async def finished(manager: DownloadManager, record: Download) -> Download:
    """Wait (bounded) for ``record`` to finish."""
    wait: Awaitable[Download] = manager.wait(record)
    async with asyncio.timeout(WAIT_LIMIT):
        return await wait

"""One download on the wire: each hop checked by the guard, the body streamed to an open file.

Redirects are followed here, not by the client (``follow_redirects=False``), so every target is
checked again; at most ``MAX_REDIRECTS``. The size cap is enforced twice: a ``Content-Length``
above it is refused before any body byte is read, and the streamed bytes are counted so a body
without one is cut off as soon as it passes the cap. Chunks are gathered up to ``WRITE_BYTES``
and written to the file in the manager's thread pool while the client waits for that write
(back-pressure), so the event loop never blocks on the disk and memory stays bounded. The
manager's disk meter is charged for each chunk before it is written, so a body that would fill
the downloads directory past its cap is cut off the same way. The certificate is always verified.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httputil import HTTPHeaders, HTTPInputError, parse_response_start_line
from tornado.iostream import StreamBufferFullError, StreamClosedError
from tornado.simple_httpclient import HTTPTimeoutError

from schemas.text import Text
from server.downloads.errors import DownloadError, TooLarge, UpstreamError, UpstreamTimeout
from server.downloads.guard import PinnedResolver, UrlGuard
from server.downloads.quotas import Meter
from server.downloads.records import Download

MAX_REDIRECTS = 5
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
CONNECT_TIMEOUT = 20.0
WRITE_BYTES = 256 * 1024
"""Chunks are gathered up to this size per write: fewer hand-offs to the writer threads."""
USER_AGENT = "mservices-downloader"


@dataclass(frozen=True, slots=True)
class Limits:
    """How big and how long a download may be."""

    max_bytes: int
    timeout: float


class _Abort(HTTPInputError):
    """Stops the client mid-response. Tornado closes the connection on an ``HTTPInputError``
    raised by a callback without logging it as a crash; the reason is kept in ``_Hop.abort``."""


class _Hop:
    """The response to one request: its status and headers, the body written when it is 2xx."""

    def __init__(
        self,
        record: Download,
        handle: BinaryIO,
        limits: Limits,
        pool: Executor,
        meter: Meter | None = None,
    ) -> None:
        self.record = record
        self.meter = meter
        self.handle = handle
        self.limits = limits
        self.pool = pool
        self.status: int | None = None
        self.headers = HTTPHeaders()
        self.discarded = 0
        self.abort: DownloadError | None = None
        self.closed = False
        self.pending: asyncio.Future[None] | None = None
        self.buffer = bytearray()

    @property
    def keeps_body(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def stop(self, error: DownloadError) -> None:
        self.abort = self.abort or error
        raise _Abort(str(error.message))

    def on_header(self, line: str) -> None:
        """Tornado's ``header_callback``: the status line, each header, then a blank line."""
        if self.status is None:
            self.status = parse_response_start_line(line.strip()).code
        elif line.strip():
            self.headers.parse_line(line.rstrip("\r\n"))
        elif self.keeps_body:
            self.check_length()

    def check_length(self) -> None:
        """Refuse a body announced as larger than the cap before reading any of it."""
        announced = self.headers.get("Content-Length", "")
        if not announced.strip().isdigit():
            return
        length = int(announced)
        if length > self.limits.max_bytes:
            self.stop(
                TooLarge(
                    Text(
                        "the file is {length} bytes; the limit is {limit}",
                        length=length,
                        limit=self.limits.max_bytes,
                    )
                )
            )
        if self.meter is not None:
            try:
                self.meter.announce(length)
            except DownloadError as error:
                self.stop(error)
        self.record.total = length

    def on_chunk(self, chunk: bytes) -> Awaitable[None] | None:
        """Tornado's ``streaming_callback``: count the chunk, write it when it is the file."""
        if self.closed:
            self.stop(DownloadError(Text("the download was stopped"), code="cancelled"))
        if not self.keeps_body:  # a redirect's or an error's body: read, bounded, dropped
            self.discarded += len(chunk)
            if self.discarded > self.limits.max_bytes:
                self.stop(TooLarge(Text("the upstream's error body is larger than the limit")))
            return None
        self.record.bytes += len(chunk)
        if self.record.bytes > self.limits.max_bytes:
            self.stop(too_large(self.limits))
        if self.meter is not None:
            try:
                self.meter.charge(len(chunk))
            except DownloadError as error:
                self.stop(error)
        self.buffer += chunk
        return self.flush() if len(self.buffer) >= WRITE_BYTES else None

    def flush(self) -> asyncio.Future[None] | None:
        """Write what is gathered; the client waits for it before reading on (back-pressure)."""
        if not self.buffer:
            return None
        data, self.buffer = bytes(self.buffer), bytearray()
        self.pending = asyncio.ensure_future(self.write(data))
        return self.pending

    async def drain(self) -> None:
        """After the last chunk: write the rest and wait for it; raise what stopped the hop."""
        tail = self.flush()
        if tail is not None:
            await asyncio.gather(tail, return_exceptions=True)
        if self.abort is not None:
            raise self.abort

    async def write(self, chunk: bytes) -> None:
        """Write ``chunk`` in the pool; a disk error stops the download."""
        try:
            await asyncio.get_running_loop().run_in_executor(self.pool, self.handle.write, chunk)
        except (OSError, ValueError) as error:
            failed = Text("saving the file failed: {error}", error=str(error))
            self.stop(DownloadError(failed, code="write_failed"))

    async def settle(self) -> None:
        """Stop accepting chunks and wait for the write in flight, so the file can be closed."""
        self.closed = True
        if self.pending is not None:
            await asyncio.gather(self.pending, return_exceptions=True)


async def transfer(
    record: Download,
    guard: UrlGuard,
    limits: Limits,
    handle: BinaryIO,
    pool: Executor,
    meter: Meter | None = None,
) -> None:
    """Fetch ``record.url`` into ``handle``, following and re-checking redirects; raise a
    ``DownloadError`` on any refusal or failure. ``meter`` charges the body against the disk
    cap (a body announced or grown past it is cut off with ``DiskCap``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout
    url = record.url
    for _ in range(MAX_REDIRECTS + 1):
        target = await guard.check(url)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise timed_out(limits)
        hop = _Hop(record, handle, limits, pool, meter)
        status, headers = await _fetch(hop, PinnedResolver(target=target), url, remaining, limits)
        if status in REDIRECT_CODES:
            location = headers.get("Location")
            if not location:
                raise UpstreamError(
                    Text("the upstream answered {status} without a Location", status=status)
                )
            url = urljoin(url, location)
            continue
        if not 200 <= status < 300:
            raise UpstreamError(
                Text("the upstream answered {status}", status=status), upstream_status=status
            )
        return
    raise UpstreamError(
        Text("more than {limit} redirects", limit=MAX_REDIRECTS), code="too_many_redirects"
    )


async def _fetch(
    hop: _Hop, resolver: PinnedResolver, url: str, remaining: float, limits: Limits
) -> tuple[int, HTTPHeaders]:
    """One request through a client whose resolver is pinned to the checked address."""
    client = AsyncHTTPClient(
        force_instance=True,
        resolver=resolver,
        max_body_size=limits.max_bytes + 1024 * 1024,
        max_buffer_size=limits.max_bytes + 1024 * 1024,
    )
    request = HTTPRequest(
        url,
        follow_redirects=False,
        validate_cert=True,
        connect_timeout=min(CONNECT_TIMEOUT, remaining),
        request_timeout=remaining,
        header_callback=hop.on_header,
        streaming_callback=hop.on_chunk,
        user_agent=USER_AGENT,
        decompress_response=False,
    )
    try:
        try:
            response = await client.fetch(request, raise_error=False)
        except Exception as error:
            raise _failure(hop, error, limits) from None
        await hop.drain()
    finally:
        await hop.settle()
        client.close()
        resolver.close()
    return response.code, response.headers


def _failure(hop: _Hop, error: Exception, limits: Limits) -> DownloadError:
    """The ``DownloadError`` a failed fetch stands for."""
    if hop.abort is not None:
        return hop.abort
    cause = error.real_error if isinstance(error, StreamClosedError) else None
    if isinstance(error, HTTPTimeoutError):
        return timed_out(limits)
    if isinstance(error, StreamBufferFullError) or isinstance(cause, StreamBufferFullError):
        return too_large(limits)
    if isinstance(error, ssl.SSLError):
        return UpstreamError(
            Text("the upstream's TLS failed: {error}", error=str(error)), code="tls_error"
        )
    return UpstreamError(
        Text("the upstream could not be reached: {error}", error=str(error)),
        code="upstream_unreachable",
    )


def too_large(limits: Limits) -> TooLarge:
    """The failure of a body that grew past the size cap."""
    return TooLarge(Text("the file is larger than the limit of {limit}", limit=limits.max_bytes))


def timed_out(limits: Limits) -> UpstreamTimeout:
    """The failure of a download that ran out of time."""
    return UpstreamTimeout(
        Text("the download took longer than {seconds} s", seconds=format(limits.timeout, "g"))
    )

"""Serving: bring the services up, listen for HTTP and the TCP chat, and shut down cleanly on
SIGTERM or SIGINT.

Shutdown stops accepting (HTTP and TCP) at once; then, side by side, TCP clients get a goodbye
line (``tcp.SHUTTING_DOWN``, in each connection's language) and are closed, chat WebSockets are
closed with 1001 (``close_websockets``), and HTTP requests in flight get up to
SHUTDOWN_GRACE_SECONDS to finish; last, the services (the database pool included) are closed.
A second signal during shutdown stops the process at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.web import OutputTransform

from server.app import make_app
from server.proxies import Networks, forwarded_client
from server.realtime.tcp import TcpChatServer
from server.realtime.websocket import CLOSE_GOING_AWAY, open_sockets
from server.services import Services, open_services
from server.settings import Settings

log = logging.getLogger("mservices")

SHUTDOWN_GRACE_SECONDS = 10.0
MAX_BODY_SIZE = 16 * 1024 * 1024
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
INSTANCE_HEADER = "X-Mservices-Instance"


async def serve(settings: Settings, engine: AsyncEngine, *, host: str, port: int) -> int:
    """Serve HTTP on ``host``:``port`` and the TCP chat on ``settings.tcp_port`` (0: none)
    until a stop signal; see the module docstring for how serving ends."""
    from server.cli import CommandError, ensure_schema

    await ensure_schema(settings, engine)
    services = await open_services(settings, engine=engine)
    unclosed: ExceptionGroup[Exception] | None = None
    try:
        app = make_app(settings, services)
        app.add_transform(instance_header(str(port)))
        server = DrainingHTTPServer(
            app,
            max_body_size=MAX_BODY_SIZE,
            trusted_proxies=Networks(settings.trusted_proxies) if settings.xheaders else None,
        )
        try:
            server.listen(port, address=host)
        except OSError as error:
            reason = error.strerror or error
            raise CommandError(f"cannot listen on {host}:{port}: {reason}") from None
        chat = TcpChatServer(services) if settings.tcp_port else None
        if chat is not None:
            try:
                chat_port = await chat.start(host, settings.tcp_port)
            except OSError as error:
                server.stop()
                raise CommandError(
                    f"cannot listen for the TCP chat on {host}:{settings.tcp_port}: "
                    f"{error.strerror or error}"
                ) from None
            log.info("TCP chat on %s:%d", host, chat_port)
            services.metrics.count_tcp_connections(lambda: chat.connections)
        log.info(
            "serving on http://%s:%d (database %s)",
            host,
            port,
            "embedded SQLite" if settings.uses_embedded_database else "external",
        )
        await until_stop_signal()
        await shut_down(server, chat, services)
    finally:
        try:
            await services.close()
        except ExceptionGroup as failures:
            # Each was logged by close; an error of serving itself, if any, is the one raised.
            unclosed = failures
    if unclosed is not None:
        raise CommandError(
            f"stopped, but {len(unclosed.exceptions)} service(s) failed to close (see the log)"
        )
    log.info("stopped")
    return 0


async def until_stop_signal() -> None:
    """Wait for SIGTERM or SIGINT; afterwards a second one takes its default, immediate effect."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def shut_down(
    server: DrainingHTTPServer, chat: TcpChatServer | None, services: Services
) -> None:
    """Stop accepting; then say goodbye to TCP clients, close WebSockets with 1001 and let HTTP
    requests in flight finish (at most SHUTDOWN_GRACE_SECONDS), all at the same time."""
    log.info(
        "stopping: no new connections; requests in flight get up to %.0fs",
        SHUTDOWN_GRACE_SECONDS,
    )
    server.stop()
    steps: dict[str, Coroutine[Any, Any, Any]] = {
        "HTTP requests": server.drain(SHUTDOWN_GRACE_SECONDS),
        "WebSockets": close_websockets(services),
    }
    if chat is not None:
        steps["TCP chat"] = chat.close()
    outcomes = await asyncio.gather(*steps.values(), return_exceptions=True)
    for name, outcome in zip(steps, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.error("closing %s failed", name, exc_info=outcome)
        elif outcome is False:
            log.warning("%s still running after %.0fs: cut", name, SHUTDOWN_GRACE_SECONDS)


async def close_websockets(services: Services) -> None:
    """Close every chat and ticker WebSocket with 1001 (going away), waiting (bounded) for the
    closing handshakes; a socket whose handshake finishes later is closed with 1001 at once."""
    await open_sockets(services).close_all(CLOSE_GOING_AWAY, "server shutting down", stopping=True)


class DrainingHTTPServer(HTTPServer):
    """An HTTPServer whose ``drain`` lets requests in flight finish before closing.

    Tornado's ``close_all_connections`` closes every connection's stream at once, which cuts a
    request whose body is still arriving or whose handler is still running. This server knows
    which connections are busy (request headers received, response not yet written: Tornado
    asks for the next request's delegate only once the previous response is written), so it can
    close idle keep-alive connections at once and busy ones as soon as they become idle.
    Detached connections (WebSockets) leave the count when they detach.
    """

    def initialize(
        self, *args: Any, trusted_proxies: Networks | None = None, **kwargs: Any
    ) -> None:
        """See HTTPServer.initialize; with ``trusted_proxies``, forwarding headers from those
        peers set the request's client address and scheme (``server.proxies``)."""
        super().initialize(*args, **kwargs)
        self._trusted_proxies = trusted_proxies
        self._open: set[HTTP1ServerConnection] = set()
        self._busy: set[HTTP1ServerConnection] = set()
        self._draining = False
        self._changed = asyncio.Event()

    @property
    def requests_in_flight(self) -> int:
        """Connections with a request being received or answered."""
        return len(self._busy)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        """Called for each request a connection may read next (its previous one is done)."""
        delegate = super().start_request(server_conn, request_conn)
        if self._trusted_proxies is not None:
            delegate = _Forwarded(delegate, request_conn, self._trusted_proxies)
        if not isinstance(server_conn, HTTP1ServerConnection):
            return delegate
        self._open.add(server_conn)
        self._busy.discard(server_conn)
        self._changed.set()
        if self._draining:
            server_conn.stream.close()  # no keep-alive while draining
        return _Busy(delegate, functools.partial(self._busy.add, server_conn))

    def on_close(self, server_conn: object) -> None:
        """Called when a connection's serving loop ends (closed, or detached)."""
        if isinstance(server_conn, HTTP1ServerConnection):
            self._open.discard(server_conn)
            self._busy.discard(server_conn)
            self._changed.set()
        super().on_close(server_conn)

    async def drain(self, timeout: float) -> bool:
        """After ``stop()``: close idle connections now, busy ones once their response is
        written, and cut whatever is still open after ``timeout``; True when nothing was cut."""
        self._draining = True
        for connection in self._open - self._busy:
            connection.stream.close()
        finished = True
        try:
            async with asyncio.timeout(timeout):
                while self._open:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            finished = False
        await self.close_all_connections()
        return finished


class _Busy(httputil.HTTPMessageDelegate):
    """Passes a request through, calling ``on_headers`` when its headers arrive."""

    def __init__(
        self, delegate: httputil.HTTPMessageDelegate, on_headers: Callable[[], None]
    ) -> None:
        self._delegate = delegate
        self._on_headers = on_headers

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        """See HTTPMessageDelegate."""
        self._on_headers()
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        """See HTTPMessageDelegate."""
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        """See HTTPMessageDelegate."""
        self._delegate.finish()

    def on_connection_close(self) -> None:
        """See HTTPMessageDelegate."""
        self._delegate.on_connection_close()


class _Forwarded(httputil.HTTPMessageDelegate):
    """Sets the connection's client address and scheme from a trusted proxy's headers for one
    request (Tornado's ``xheaders`` believes any peer), and restores them afterwards."""

    def __init__(
        self,
        delegate: httputil.HTTPMessageDelegate,
        request_conn: httputil.HTTPConnection,
        trusted: Networks,
    ) -> None:
        self._delegate = delegate
        self._context: Any = getattr(request_conn, "context", None)
        self._trusted = trusted
        self._saved: tuple[str, str] | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        """Apply the forwarding headers before the request object is built from the context."""
        context = self._context
        if context is not None and hasattr(context, "remote_ip"):
            self._saved = (context.remote_ip, context.protocol)
            context.remote_ip, context.protocol = forwarded_client(
                context.remote_ip, context.protocol, headers, self._trusted
            )
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        """See HTTPMessageDelegate."""
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        """See HTTPMessageDelegate."""
        self._delegate.finish()
        self._restore()

    def on_connection_close(self) -> None:
        """See HTTPMessageDelegate."""
        self._delegate.on_connection_close()
        self._restore()

    def _restore(self) -> None:
        # The next request on a keep-alive connection starts from the real peer again.
        if self._saved is not None:
            self._context.remote_ip, self._context.protocol = self._saved
            self._saved = None


class _InstanceHeader(OutputTransform):
    """Stamps every response (WebSocket handshakes and static files too) with the process it
    came from, so an operator (and the nginx test) can tell the processes apart."""

    value = ""

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        """Add ``X-Mservices-Instance``."""
        headers[INSTANCE_HEADER] = self.value
        return status_code, headers, chunk


def instance_header(value: str) -> type[OutputTransform]:
    """An output transform adding ``X-Mservices-Instance: value`` (this process's HTTP port)."""
    return type("InstanceHeader", (_InstanceHeader,), {"value": value})

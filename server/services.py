"""Services: everything mservices opens at start-up and closes at shutdown, in one place.

Handlers never open long-lived resources themselves; they receive this container through
``make_app(settings, services)`` and ``initialize(services=...)``.

Whatever ``open_services`` opens is registered, the moment it is open, in one
``contextlib.AsyncExitStack`` (:class:`Resources`). A start-up that fails half way closes what
it had opened, last first, and raises its own error; ``Services.close`` closes everything the
same way. Every close runs even when another fails: each failure is logged with its
traceback, and ``Services.close`` then raises them together as one ``ExceptionGroup`` (a failed
start-up only logs them: its own error is the one to report).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from repositories.db import create_engine, make_session_factory
from server.background import Background
from server.downloads.manager import DownloadManager
from server.invalidation import Invalidation
from server.logins import LoginCache, LoginResolver, TokenLifetime
from server.mail import Mailer
from server.menu_access import MenuAccess
from server.metrics import Metrics
from server.realtime.bus import Bus, LocalBus
from server.realtime.history import ChatHistory
from server.realtime.hub import Hub
from server.realtime.pings import SocketPings
from server.realtime.presence import LocalPresence, Presence
from server.realtime.redis_bus import RedisBus
from server.realtime.redis_presence import RedisPresence
from server.realtime.rooms import RoomPolicy
from server.realtime.sessions import SessionSockets
from server.security.passwords import PasswordHasher
from server.security.throttle import (
    LoginThrottle,
    RedisOutage,
    SignupPolicy,
    SignupThrottle,
    ThrottlePolicy,
    login_throttle,
    window_throttle,
)
from server.settings import Settings, load_cookie_secret
from server.support import SupportDesk

log = logging.getLogger("mservices")

REDIS_SOCKET_TIMEOUT = 5.0
"""Seconds a Redis command may wait for its reply before it fails (and is handled as Redis
being away: chat carries on locally)."""

BACKGROUND_DRAIN_SECONDS = 5.0
"""How long closing waits for background work still running before it cancels it."""


class Resources:
    """What ``open_services`` opened, closed last first in one ``AsyncExitStack``.

    Every close runs whatever the others do; each failure is logged as it happens, and
    ``close`` raises them together once all have run.
    """

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self._failures: list[Exception] = []

    def on_close(self, name: str, close: Callable[[], object]) -> None:
        """Call ``close()`` (awaiting what it returns, if awaitable) when closing; ``name``
        says in the log what failed to close."""

        async def guarded() -> None:
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except Exception as error:
                log.error("closing %s failed", name, exc_info=error)
                self._failures.append(error)

        self._stack.push_async_callback(guarded)

    async def close(self) -> None:
        """Close everything registered, last first; then raise an ``ExceptionGroup`` of the
        closes that failed, if any. A second call closes nothing more."""
        try:
            await self._stack.aclose()
        finally:
            failures, self._failures = self._failures, []
        if failures:
            raise ExceptionGroup(f"{len(failures)} service(s) failed to close", failures)


@dataclass(slots=True)
class Services:
    """The long-lived resources shared by every request of one process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    passwords: PasswordHasher
    menus: MenuAccess
    logins: LoginResolver
    login_cache: LoginCache
    throttle: LoginThrottle
    signups: SignupThrottle
    """Registrations per client IP (``POST /user``)."""
    mailer: Mailer
    """Sends verification and reset links (SMTP, or the log without ``MSERVICES_SMTP_URL``)."""
    reset_ips: SignupThrottle
    """Password reset requests per client IP (``POST /user/password/forgot``, ``/forgot``)."""
    reset_addresses: SignupThrottle
    """Reset links sent per email address, whether or not it belongs to an account."""
    invalidation: Invalidation
    redis: Redis | None
    cookie_secret: str
    background: Background
    hub: Hub
    support: SupportDesk
    """Private support conversations: their rules and live frames (``server/support.py``)."""
    rooms: RoomPolicy
    """Who may enter which chat room (``server/realtime/rooms.py``)."""
    downloads: DownloadManager
    """This process's downloads (records in memory; files in the downloads directory)."""
    metrics: Metrics = field(default_factory=Metrics)
    """This process's Prometheus registry and metrics (``/metrics``)."""
    chat_sessions: SessionSockets = field(default_factory=SessionSockets)
    """Open chat sockets by session: closed with 4001 when their session is revoked."""
    chat_pings: SocketPings = field(default_factory=SocketPings)
    """Open chat sockets, kept alive by one ping task for all (not one task per socket)."""

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background (tracked, failures logged)."""
        return self.background.spawn(work)

    resources: Resources = field(default_factory=Resources, repr=False)
    """What ``open_services`` opened, in the order it opened them."""

    async def close(self) -> None:
        """Close everything ``open_services`` opened, last first: downloads (running ones
        cancelled, partial files deleted), socket pings, background work (given
        ``BACKGROUND_DRAIN_SECONDS``), the chat bus and presence, chat history (queued messages
        written), invalidation, Redis, the database engine, the password hashers.

        A failing close is logged and the others still run; then the failures are raised
        together as an ``ExceptionGroup``. Closing again does nothing.
        """
        await self.resources.close()


def database_engine(settings: Settings) -> AsyncEngine:
    """The engine ``settings`` describe: its URL, pool (``DB_POOL_SIZE`` connections, at most
    ``DB_MAX_OVERFLOW`` more under load) and connect timeout. ``serve`` and ``open_services``
    both build theirs here."""
    return create_engine(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_timeout=settings.db_connect_timeout,
    )


async def open_services(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Services:
    """Open the services for ``settings`` and start their background work; ``clock`` (seconds,
    monotonic) times the Redis outage rules: throttle cool-down, channel health, cache trust.

    ``engine`` (``serve`` passes the one it checked the schema with) is closed with the
    services, like one opened here. A step that fails closes every step before it, last first,
    and the failure is raised.
    """
    resources = Resources()
    try:
        return await _open(settings, resources, engine=engine, clock=clock)
    except BaseException:
        # Each close that fails is logged; the start-up's own failure is the one to raise.
        with contextlib.suppress(ExceptionGroup):
            await resources.close()
        raise


async def _open(
    settings: Settings,
    resources: Resources,
    *,
    engine: AsyncEngine | None,
    clock: Callable[[], float],
) -> Services:
    """``open_services``' steps: each registers its close in ``resources`` once it is open."""
    # First what leaves nothing open behind, so a bad secret file or SMTP URL starts nothing.
    cookie_secret = load_cookie_secret(settings)
    mailer = Mailer.from_settings(settings)
    passwords = PasswordHasher(
        max_workers=settings.password_workers,
        time_cost=settings.password_time_cost,
        memory_kib=settings.password_memory_kib,
        parallelism=settings.password_parallelism,
    )
    resources.on_close("the password hashers", passwords.close)
    engine = engine or database_engine(settings)
    resources.on_close("the database engine", engine.dispose)
    sessions = make_session_factory(engine)
    # Every command is bounded (socket_timeout) and dead peers are noticed (keepalive), so a
    # Redis that stops answering without refusing (a partition) delays chat, never hangs it.
    # Blocking pub/sub reads (listen) ignore socket_timeout since redis-py 8.1.
    redis = (
        Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=2,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            socket_keepalive=True,
            health_check_interval=15,
        )
        if settings.redis_url
        else None
    )
    if redis is not None:
        resources.on_close("the Redis client", redis.aclose)
    policy = ThrottlePolicy(
        free_failures=settings.login_free_failures,
        ip_free_failures=settings.login_ip_free_failures,
        base_seconds=settings.login_backoff_base_seconds,
        max_seconds=settings.login_backoff_max_seconds,
        window_seconds=settings.login_failure_window_seconds,
    )
    # With Redis, every throttle counts in memory while it is unreachable (one outage, shared).
    outage = RedisOutage(clock=clock)
    throttle: LoginThrottle = login_throttle(
        redis, policy, prefix=f"{settings.redis_prefix}:login:", outage=outage
    )
    signup_policy = SignupPolicy(
        per_ip=settings.signup_per_ip, window_seconds=settings.signup_window_seconds
    )
    signups: SignupThrottle = window_throttle(
        redis, signup_policy, prefix=f"{settings.redis_prefix}:signup:", outage=outage
    )
    reset_policy = SignupPolicy(
        per_ip=settings.reset_per_ip, window_seconds=settings.reset_window_seconds
    )
    address_policy = SignupPolicy(
        per_ip=settings.reset_per_email, window_seconds=settings.reset_window_seconds
    )
    reset_ips: SignupThrottle = window_throttle(
        redis, reset_policy, prefix=f"{settings.redis_prefix}:reset-ip:", outage=outage
    )
    reset_addresses: SignupThrottle = window_throttle(
        redis, address_policy, prefix=f"{settings.redis_prefix}:reset-to:", outage=outage
    )
    invalidation = Invalidation(redis, channel=f"{settings.redis_prefix}:invalidate", clock=clock)
    login_cache = LoginCache(healthy=invalidation.healthy, clock=clock)
    menus = MenuAccess(sessions)
    invalidation.listen(login_cache.on_event)
    invalidation.listen(menus.on_event)
    chat_sessions = SessionSockets()
    invalidation.listen(chat_sessions.on_event)
    invalidation.start()
    resources.on_close("the invalidation subscriber", invalidation.close)
    history = ChatHistory(sessions)
    history.start()
    resources.on_close("the chat history writer", history.close)
    bus: Bus
    presence: Presence
    if redis is not None:
        redis_bus = RedisBus(redis, channel=f"{settings.redis_prefix}:chat")
        redis_presence = RedisPresence(
            redis, prefix=settings.redis_prefix, process_id=redis_bus.origin
        )
        redis_bus.on_resync(redis_presence.resync)
        await redis_presence.start()
        # Closed after the bus (registered before it), while Redis is still open.
        resources.on_close("the chat presence", redis_presence.close)
        bus, presence = redis_bus, redis_presence
    else:
        bus, presence = LocalBus(), LocalPresence()
    await bus.start()
    resources.on_close("the chat bus", bus.close)
    hub = Hub(bus, presence, history)
    if isinstance(bus, RedisBus):
        # After presence.resync (registered first): members everywhere get the rewritten list.
        bus.on_resync(hub.resync)
    background = Background()
    support = SupportDesk(sessions, hub, menus, spawn=background.spawn)
    resources.on_close(
        "the background work", functools.partial(background.drain, BACKGROUND_DRAIN_SECONDS)
    )
    chat_pings = SocketPings()
    resources.on_close("the chat socket pings", chat_pings.close)
    downloads = DownloadManager.from_settings(settings, sessions)
    # Closed first: it cancels running downloads and deletes their partial files.
    resources.on_close("the downloads", downloads.close)
    downloads.start_expiry(background)  # expired saved files: now, then hourly
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        passwords=passwords,
        menus=menus,
        logins=LoginResolver(
            sessions,
            login_cache,
            lifetime=TokenLifetime.from_days(
                idle_days=settings.token_idle_days, absolute_days=settings.token_absolute_days
            ),
            spawn=background.spawn,
        ),
        login_cache=login_cache,
        throttle=throttle,
        signups=signups,
        mailer=mailer,
        reset_ips=reset_ips,
        reset_addresses=reset_addresses,
        invalidation=invalidation,
        redis=redis,
        cookie_secret=cookie_secret,
        background=background,
        hub=hub,
        support=support,
        rooms=RoomPolicy(support),
        chat_sessions=chat_sessions,
        chat_pings=chat_pings,
        downloads=downloads,
        resources=resources,
    )

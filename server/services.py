"""Services: everything mservices opens at start-up and closes at shutdown, in one place.

Handlers never open long-lived resources themselves; they receive this container through
``make_app(settings, services)`` and ``initialize(services=...)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
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
from server.realtime.redis_bus import RedisBus, RedisPresence
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

REDIS_SOCKET_TIMEOUT = 5.0
"""Seconds a Redis command may wait for its reply before it fails (and is handled as Redis
being away: chat carries on locally)."""


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

    async def close(self) -> None:
        """Release everything this container opened."""
        await self.downloads.close()  # cancels running downloads, deletes their partial files
        await self.chat_pings.close()
        await self.background.drain(timeout=5)
        await self.hub.bus.close()
        await self.hub.history.close()
        await self.invalidation.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        self.passwords.close()


async def open_services(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Services:
    """Open the services for ``settings`` and start their background work; ``clock`` (seconds,
    monotonic) times the Redis outage rules: throttle cool-down, channel health, cache trust."""
    engine = engine or create_engine(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        connect_timeout=settings.db_connect_timeout,
    )
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
    background = Background()
    history = ChatHistory(sessions)
    history.start()
    bus: Bus
    presence: Presence
    if redis is not None:
        redis_bus = RedisBus(redis, channel=f"{settings.redis_prefix}:chat")
        redis_presence = RedisPresence(
            redis, prefix=settings.redis_prefix, process_id=redis_bus.origin
        )
        redis_bus.on_resync(redis_presence.resync)
        redis_bus.on_close(redis_presence.close)  # Services.close closes hub.bus
        await redis_presence.start()
        bus, presence = redis_bus, redis_presence
    else:
        bus, presence = LocalBus(), LocalPresence()
    await bus.start()
    hub = Hub(bus, presence, history)
    if isinstance(bus, RedisBus):
        # After presence.resync (registered first): members everywhere get the rewritten list.
        bus.on_resync(hub.resync)
    services = Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        passwords=PasswordHasher(
            max_workers=settings.password_workers,
            time_cost=settings.password_time_cost,
            memory_kib=settings.password_memory_kib,
            parallelism=settings.password_parallelism,
        ),
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
        mailer=Mailer.from_settings(settings),
        reset_ips=reset_ips,
        reset_addresses=reset_addresses,
        invalidation=invalidation,
        redis=redis,
        cookie_secret=load_cookie_secret(settings),
        background=background,
        hub=hub,
        chat_sessions=chat_sessions,
        downloads=DownloadManager.from_settings(settings, sessions),
    )
    services.downloads.start_expiry(background)  # expired saved files: now, then hourly
    return services

"""Logins: the LRU+TTL cache of principals, and the resolver that reads the database on a miss.

Resolver tests run on SQLite and, when configured, MariaDB (``database_url``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from repositories.models import AuthToken, User, utcnow
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.user import UserRead
from server.invalidation import Event
from server.logins import Login, LoginCache, LoginResolver, TokenExpired, TokenLifetime
from server.principal import Principal
from server.security.tokens import hash_token, new_token

DAY = dt.timedelta(days=1)
IDLE = dt.timedelta(days=7)


# -- LoginCache ----------------------------------------------------------------------------


def cached_login(token_hash: str, *, user_id: int = 1) -> Login:
    """A Login as the resolver would cache it, for cache tests that need no database."""
    now = utcnow()
    return Login(
        principal=Principal(
            user_id=user_id, name=f"user{user_id}", is_superuser=False, role_ids=frozenset()
        ),
        user=UserRead(
            id=user_id,
            name=f"user{user_id}",
            mobile=None,
            city=None,
            last_login_device=None,
            is_active=True,
            is_superuser=False,
            created_at=now,
        ),
        role_names=(),
        token_hash=token_hash,
        token_id=1,
        created_at=now,
        expires_at=now + DAY,
        last_used_at=now,
    )


def test_the_cache_returns_what_was_put_and_none_for_the_rest() -> None:
    cache = LoginCache()
    login = cached_login("a")
    cache.put(login)
    assert cache.get("a") is login
    assert cache.get("b") is None


def test_the_cache_evicts_the_least_recently_used_entry_when_full() -> None:
    cache = LoginCache(max_entries=2)
    cache.put(cached_login("a"))
    cache.put(cached_login("b"))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put(cached_login("c"))
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None


async def test_a_cache_entry_older_than_the_ttl_is_gone() -> None:
    cache = LoginCache(ttl=0.05)
    cache.put(cached_login("a"))
    await asyncio.sleep(0.1)
    assert cache.get("a") is None
    assert len(cache) == 0


def test_a_cache_entry_younger_than_the_ttl_is_served() -> None:
    cache = LoginCache(ttl=60)
    cache.put(cached_login("a"))
    assert cache.get("a") is not None


async def test_replacing_an_entry_keeps_its_age() -> None:
    cache = LoginCache(ttl=0.2)
    cache.put(cached_login("a"))
    await asyncio.sleep(0.12)
    cache.replace(replace(cached_login("a"), role_names=("changed",)))
    await asyncio.sleep(0.12)
    assert cache.get("a") is None


def test_replacing_an_absent_entry_adds_nothing() -> None:
    cache = LoginCache()
    cache.replace(cached_login("a"))
    assert len(cache) == 0


def test_a_token_event_evicts_that_token_only() -> None:
    cache = LoginCache()
    cache.put(cached_login("a"))
    cache.put(cached_login("b"))
    cache.on_event(Event("token", "a"))
    assert cache.get("a") is None
    assert cache.get("b") is not None


def test_a_user_event_evicts_every_token_of_that_user_only() -> None:
    cache = LoginCache()
    cache.put(cached_login("a1", user_id=1))
    cache.put(cached_login("a2", user_id=1))
    cache.put(cached_login("b", user_id=2))
    cache.on_event(Event("user", "1"))
    assert (cache.get("a1"), cache.get("a2")) == (None, None)
    assert cache.get("b") is not None


def test_an_all_event_empties_the_cache() -> None:
    cache = LoginCache()
    cache.put(cached_login("a", user_id=1))
    cache.put(cached_login("b", user_id=2))
    cache.on_event(Event("all"))
    assert len(cache) == 0


def test_a_menus_event_leaves_logins_alone() -> None:
    cache = LoginCache()
    cache.put(cached_login("a"))
    cache.on_event(Event("menus"))
    assert cache.get("a") is not None


class Channel:
    """The invalidation channel's health as the test sets it, and a clock the test moves."""

    def __init__(self) -> None:
        self.ok = True
        self.now = 1000.0

    def healthy(self) -> bool:
        return self.ok

    def clock(self) -> float:
        return self.now


def test_while_the_channel_is_unhealthy_an_entry_older_than_the_outage_ttl_is_dropped() -> None:
    channel = Channel()
    cache = LoginCache(ttl=60, outage_ttl=5, healthy=channel.healthy, clock=channel.clock)
    cache.put(cached_login("a"))
    channel.ok = False
    channel.now += 5.5
    assert cache.get("a") is None
    assert len(cache) == 0


def test_while_the_channel_is_unhealthy_a_younger_entry_is_still_served() -> None:
    channel = Channel()
    cache = LoginCache(ttl=60, outage_ttl=5, healthy=channel.healthy, clock=channel.clock)
    cache.put(cached_login("a"))
    channel.ok = False
    channel.now += 4.5
    assert cache.get("a") is not None


def test_while_the_channel_is_healthy_an_entry_is_trusted_up_to_the_ttl() -> None:
    channel = Channel()
    cache = LoginCache(ttl=60, outage_ttl=5, healthy=channel.healthy, clock=channel.clock)
    cache.put(cached_login("a"))
    channel.now += 59
    assert cache.get("a") is not None
    channel.now += 2
    assert cache.get("a") is None


def test_an_entry_read_again_during_an_outage_is_trusted_for_the_outage_ttl_again() -> None:
    channel = Channel()
    cache = LoginCache(ttl=60, outage_ttl=5, healthy=channel.healthy, clock=channel.clock)
    channel.ok = False
    cache.put(cached_login("a"))
    channel.now += 3
    assert cache.get("a") is not None
    channel.now += 3
    assert cache.get("a") is None


# -- LoginResolver -------------------------------------------------------------------------


@dataclass
class Resolving:
    """A resolver with its cache, and the background work it asked for (not yet run)."""

    resolver: LoginResolver
    cache: LoginCache
    spawned: list[Coroutine[Any, Any, Any]]


@pytest.fixture
async def resolving(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Resolving]:
    """A resolver on the test database with a 7-day idle limit; spawned work is collected."""
    cache = LoginCache()
    spawned: list[Coroutine[Any, Any, Any]] = []
    lifetime = TokenLifetime(idle=IDLE, absolute=30 * DAY)
    resolver = LoginResolver(sessions, cache, lifetime=lifetime, spawn=spawned.append)
    yield Resolving(resolver, cache, spawned)
    for work in spawned:
        work.close()  # never run by the test: close it so it is not reported as never awaited


@dataclass
class Issued:
    """A user's bearer token, as the client holds it, and the ids behind it."""

    token: str
    user_id: int
    token_id: int
    role_ids: frozenset[int]


async def issue(
    sessions: async_sessionmaker[AsyncSession],
    *,
    name: str = "alice",
    roles: Sequence[str] = (),
    expires_at: dt.datetime | None = None,
) -> Issued:
    """Create a user holding ``roles`` and a token for them (committed)."""
    token = new_token()
    async with sessions() as session, session.begin():
        users = UserRepository(session)
        user = await users.add(name=name, password_hash="not used here")
        role_ids = [(await RoleRepository(session).add(name=role)).id for role in roles]
        await users.set_roles(user.id, role_ids)
        row = await TokenRepository(session).add(
            user_id=user.id,
            token_hash=hash_token(token),
            device="pc",
            expires_at=expires_at or utcnow() + DAY,
        )
    return Issued(token, user.id, row.id, frozenset(role_ids))


async def set_token(
    sessions: async_sessionmaker[AsyncSession], token_id: int, **values: Any
) -> None:
    """Change a token row behind the resolver's back."""
    async with sessions() as session, session.begin():
        await session.execute(update(AuthToken).where(AuthToken.id == token_id).values(**values))


async def stored_last_used_at(
    sessions: async_sessionmaker[AsyncSession], token_id: int
) -> dt.datetime:
    """The token's ``last_used_at`` as the database has it now."""
    async with sessions() as session:
        value = await session.scalar(select(AuthToken.last_used_at).where(AuthToken.id == token_id))
    assert value is not None
    return value


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collect the SQL of every statement ``engine`` sends while the block runs."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_valid_token_resolves_to_its_principal_with_role_ids_and_names(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions, roles=("manager", "cashier"))
    login = await resolving.resolver.resolve(issued.token)
    assert login is not None
    assert login.principal == Principal(
        user_id=issued.user_id,
        name="alice",
        is_superuser=False,
        role_ids=issued.role_ids,
        token_id=issued.token_id,
    )
    assert len(login.principal.role_ids) == 2
    assert login.role_names == ("cashier", "manager")
    assert (login.user.id, login.user.name, login.user.is_active) == (issued.user_id, "alice", True)
    assert (login.token_hash, login.token_id) == (hash_token(issued.token), issued.token_id)


async def test_a_user_without_roles_resolves_with_none(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    login = await resolving.resolver.resolve(issued.token)
    assert login is not None
    assert (login.principal.role_ids, login.role_names) == (frozenset(), ())


async def test_a_second_resolve_is_served_from_the_cache_without_the_database(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions, roles=("cashier",))
    with recorded_statements(engine) as first:
        await resolving.resolver.resolve(issued.token)
    with recorded_statements(engine) as second:
        login = await resolving.resolver.resolve(issued.token)
    assert first  # the counter sees the database when it is used
    assert second == []
    assert login is not None
    assert login.principal.user_id == issued.user_id


async def test_an_unknown_token_resolves_to_none(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    await issue(sessions)
    assert await resolving.resolver.resolve(new_token()) is None
    assert len(resolving.cache) == 0


async def test_a_revoked_token_is_expired(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    await set_token(sessions, issued.token_id, revoked_at=utcnow())
    with pytest.raises(TokenExpired):
        await resolving.resolver.resolve(issued.token)
    assert len(resolving.cache) == 0


async def test_the_token_of_an_inactive_user_is_expired(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == issued.user_id).values(is_active=False))
    with pytest.raises(TokenExpired):
        await resolving.resolver.resolve(issued.token)


async def test_a_token_past_its_absolute_expiry_is_expired(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions, expires_at=utcnow() - dt.timedelta(seconds=1))
    with pytest.raises(TokenExpired):
        await resolving.resolver.resolve(issued.token)
    assert len(resolving.cache) == 0


async def test_a_token_unused_for_longer_than_the_idle_limit_is_expired(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions, expires_at=utcnow() + 30 * DAY)
    await set_token(
        sessions, issued.token_id, last_used_at=utcnow() - IDLE - dt.timedelta(minutes=1)
    )
    with pytest.raises(TokenExpired):
        await resolving.resolver.resolve(issued.token)
    assert resolving.spawned == []


async def test_a_token_used_within_the_idle_limit_is_valid(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions, expires_at=utcnow() + 30 * DAY)
    await set_token(sessions, issued.token_id, last_used_at=utcnow() - IDLE + dt.timedelta(hours=1))
    assert await resolving.resolver.resolve(issued.token) is not None


async def test_a_token_used_again_after_a_minute_has_last_used_at_written_in_the_background(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    long_ago = (utcnow() - dt.timedelta(minutes=2)).replace(microsecond=0)
    await set_token(sessions, issued.token_id, last_used_at=long_ago)
    before = utcnow().replace(microsecond=0)

    login = await resolving.resolver.resolve(issued.token)
    assert login is not None
    assert login.last_used_at >= before
    assert len(resolving.spawned) == 1
    assert await stored_last_used_at(sessions, issued.token_id) == long_ago  # not yet written

    await resolving.spawned.pop()
    assert await stored_last_used_at(sessions, issued.token_id) >= before

    again = await resolving.resolver.resolve(issued.token)  # within the minute: no new write
    assert again is not None
    assert resolving.spawned == []


async def test_a_token_used_again_within_a_minute_is_not_written(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    written = await stored_last_used_at(sessions, issued.token_id)
    await resolving.resolver.resolve(issued.token)
    resolving.cache.on_event(Event("all"))  # the database path must not write either
    await resolving.resolver.resolve(issued.token)
    assert resolving.spawned == []
    assert await stored_last_used_at(sessions, issued.token_id) == written


async def test_an_evicted_token_is_read_again_so_its_revocation_is_seen_at_once(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    assert await resolving.resolver.resolve(issued.token) is not None
    await set_token(sessions, issued.token_id, revoked_at=utcnow())
    # Until evicted, the cache answers (that is the point of it)...
    assert await resolving.resolver.resolve(issued.token) is not None
    resolving.cache.on_event(Event("token", hash_token(issued.token)))
    # ...and once evicted, the database does.
    with pytest.raises(TokenExpired):
        await resolving.resolver.resolve(issued.token)


async def test_an_evicted_user_is_read_again_so_a_deactivation_is_seen_at_once(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    assert await resolving.resolver.resolve(issued.token) is not None
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == issued.user_id).values(is_active=False))
    resolving.cache.on_event(Event("user", str(issued.user_id)))
    with pytest.raises(TokenExpired):
        await resolving.resolver.resolve(issued.token)


async def test_an_evicted_login_is_read_again_with_its_new_roles(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions, roles=("cashier",))
    await resolving.resolver.resolve(issued.token)
    async with sessions() as session, session.begin():
        await UserRepository(session).set_roles(issued.user_id, [])
    resolving.cache.on_event(Event("user", str(issued.user_id)))
    login = await resolving.resolver.resolve(issued.token)
    assert login is not None
    assert (login.principal.role_ids, login.role_names) == (frozenset(), ())


async def test_a_cached_login_that_looks_expired_is_checked_against_the_database(
    sessions: async_sessionmaker[AsyncSession], resolving: Resolving
) -> None:
    issued = await issue(sessions)
    login = await resolving.resolver.resolve(issued.token)
    assert login is not None
    resolving.cache.put(replace(login, expires_at=utcnow() - dt.timedelta(seconds=1)))
    fresh = await resolving.resolver.resolve(issued.token)
    assert fresh is not None
    assert fresh.expires_at == login.expires_at
    assert resolving.cache.get(hash_token(issued.token)) == fresh

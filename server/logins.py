"""Logins: bearer tokens resolved to principals through a cache, the database only on a miss.

The hot path (a known, valid token) touches no database: the cache holds the principal and a
snapshot of the user. ``last_used_at`` is written at most once a minute per token, in the
background. Revocations evict the entry here at once and, through ``Invalidation``, in every
other process within a second; entries also expire after ``ttl`` seconds as a safety net.
While the invalidation channel is not healthy (Redis unreachable, or a publish failed), an
entry older than ``outage_ttl`` seconds (``OUTAGE_TTL``) is read again from the database, so a
revocation made elsewhere takes effect here within that bound even when its event is lost.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.models import AuthToken, Role, User, utcnow
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.user import UserRead
from server.invalidation import Event
from server.principal import Principal
from server.security.tokens import hash_token

TOUCH_INTERVAL = dt.timedelta(minutes=1)

Spawn = Callable[[Coroutine[Any, Any, Any]], object]


@dataclass(frozen=True, slots=True)
class Login:
    """A valid token's principal, the user as last read, and the token's clock."""

    principal: Principal
    user: UserRead
    role_names: tuple[str, ...]
    token_hash: str
    token_id: int
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: dt.datetime


OUTAGE_TTL = 5.0
"""Seconds a cached login is trusted while the invalidation channel is not healthy: the bound
on how long a token revoked in another process keeps working here during a Redis outage."""


def _always_healthy() -> bool:
    return True


class LoginCache:
    """A bounded LRU of token hash -> Login, with a time-to-live as a safety net, shortened to
    ``outage_ttl`` while ``healthy()`` (the invalidation channel's) says events may be lost."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl: float = 60.0,
        outage_ttl: float = OUTAGE_TTL,
        healthy: Callable[[], bool] = _always_healthy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.outage_ttl = outage_ttl
        self.healthy = healthy
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Login]] = OrderedDict()

    def get(self, token_hash: str) -> Login | None:
        """The cached login, or None when absent, older than ``ttl``, or older than
        ``outage_ttl`` while the invalidation channel is not healthy."""
        item = self._entries.get(token_hash)
        if item is None:
            return None
        stored_at, login = item
        age = self._clock() - stored_at
        if age > self.ttl or (age > self.outage_ttl and not self.healthy()):
            del self._entries[token_hash]
            return None
        self._entries.move_to_end(token_hash)
        return login

    def put(self, login: Login) -> None:
        """Cache ``login`` (evicting the least recently used entry when full)."""
        self._entries[login.token_hash] = (self._clock(), login)
        self._entries.move_to_end(login.token_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def replace(self, login: Login) -> None:
        """Update an entry in place, keeping its age."""
        item = self._entries.get(login.token_hash)
        if item is not None:
            self._entries[login.token_hash] = (item[0], login)

    def on_event(self, event: Event) -> None:
        """Apply an invalidation event."""
        if event.kind == "token":
            self._entries.pop(event.key, None)
        elif event.kind == "user":
            user_id = int(event.key)
            for token_hash in [
                key for key, (_, login) in self._entries.items() if login.user.id == user_id
            ]:
                del self._entries[token_hash]
        elif event.kind in ("roles", "all"):
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class TokenLifetime:
    """The one expiry rule of a login token: it ends ``absolute`` after it was issued, or
    ``idle`` after it was last used, whichever comes first (or when it is revoked).

    Issuing (``expires_at``), resolving a bearer token and listing a user's sessions all ask
    this object, so the rule is written once.
    """

    idle: dt.timedelta
    absolute: dt.timedelta

    @classmethod
    def from_days(cls, *, idle_days: float, absolute_days: float) -> TokenLifetime:
        """The rule for ``MSERVICES_TOKEN_IDLE_DAYS`` and ``MSERVICES_TOKEN_ABSOLUTE_DAYS``."""
        return cls(idle=dt.timedelta(days=idle_days), absolute=dt.timedelta(days=absolute_days))

    def expires_at(self, issued_at: dt.datetime) -> dt.datetime:
        """The absolute expiry of a token issued at ``issued_at``."""
        return issued_at + self.absolute

    def is_live(
        self,
        *,
        expires_at: dt.datetime,
        last_used_at: dt.datetime,
        now: dt.datetime,
        revoked_at: dt.datetime | None = None,
    ) -> bool:
        """True while a token is neither revoked, past its absolute expiry, nor idle too long."""
        return revoked_at is None and now < expires_at and now < last_used_at + self.idle


class TokenExpired(Exception):
    """The token exists but has passed its idle or absolute expiry, or was revoked."""


class LoginResolver:
    """Turns a bearer token into a ``Login``: cache first, database on a miss."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache: LoginCache,
        *,
        lifetime: TokenLifetime,
        spawn: Spawn,
    ) -> None:
        self._sessions = sessions
        self._cache = cache
        self.lifetime = lifetime
        self._spawn = spawn

    async def resolve(self, token: str) -> Login | None:
        """The login of ``token``; None when unknown; TokenExpired when expired or revoked."""
        token_hash = hash_token(token)
        now = utcnow()
        login = self._cache.get(token_hash)
        if login is None or self._expired(login, now):
            # A miss, or expiry by this process's possibly stale clock: ask the database.
            login = await self._load(token_hash)
            if login is None:
                return None
            if self._expired(login, now):
                raise TokenExpired
            self._cache.put(login)
        if now - login.last_used_at >= TOUCH_INTERVAL:
            login = replace(login, last_used_at=now)
            self._cache.replace(login)
            self._spawn(self._touch(login.token_id, now))
        return login

    def _expired(self, login: Login, now: dt.datetime) -> bool:
        return not self.lifetime.is_live(
            expires_at=login.expires_at, last_used_at=login.last_used_at, now=now
        )

    async def _load(self, token_hash: str) -> Login | None:
        async with self._sessions() as session:
            token = await TokenRepository(session).get_by_hash(token_hash)
            if token is None:
                return None
            if token.revoked_at is not None:
                raise TokenExpired
            users = UserRepository(session)
            user = await users.get(token.user_id)
            if not user.is_active:
                raise TokenExpired
            roles = await users.roles(user.id)
        return make_login(user, token, token_hash, roles)

    async def _touch(self, token_id: int, when: dt.datetime) -> None:
        async with self._sessions() as session, session.begin():
            await TokenRepository(session).touch(token_id, when)


def make_login(user: User, token: AuthToken, token_hash: str, roles: Sequence[Role]) -> Login:
    """Assemble a Login from rows just read or written."""
    return Login(
        principal=Principal(
            user_id=user.id,
            name=user.name,
            is_superuser=user.is_superuser,
            role_ids=frozenset(role.id for role in roles),
            token_id=token.id,
            language=user.language,
        ),
        user=UserRead.model_validate(user),
        role_names=tuple(role.name for role in roles),
        token_hash=token_hash,
        token_id=token.id,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
    )

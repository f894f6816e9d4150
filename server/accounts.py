"""Account operations shared by every way in (JSON API, browser login, TCP chat): password login
with throttling and auditing, token issue and revocation.

These functions work inside the caller's transaction (they flush, never commit), except the
audit of a *failed* attempt, which is written in its own transaction so that the refusal's
rollback cannot erase it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.audit import AuditRepository
from repositories.errors import DomainError
from repositories.models import AuthToken, Role, User, utcnow
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from server.invalidation import Event
from server.security.throttle import retry_after_header
from server.security.tokens import hash_token, new_token
from server.services import Services

log = logging.getLogger("mservices.accounts")

_missing_signup_roles: set[str] = set()
"""Sign-up role names already warned about as missing (one warning per name and process)."""


class InvalidCredentials(DomainError):
    """Unknown name, wrong password or inactive account: deliberately indistinguishable."""

    code = "invalid_credentials"
    status = 401

    def __init__(self) -> None:
        super().__init__("wrong name or password")


class Throttled(DomainError):
    """Refused for a while (429 with ``Retry-After``); the message says when to try again."""

    status = 429

    def __init__(self, what: str, retry_after: float) -> None:
        seconds = retry_after_header(retry_after)
        unit = "second" if seconds == "1" else "seconds"
        super().__init__(f"{what}; try again in {seconds} {unit}")
        self.retry_after = retry_after
        self.headers["Retry-After"] = seconds


class TooManyAttempts(Throttled):
    """Too many failed logins from this address (for this name); try again later."""

    code = "too_many_attempts"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed logins", retry_after)


class TooManySignups(Throttled):
    """This address has registered as many accounts as the window allows; try again later."""

    code = "too_many_signups"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many accounts registered from this address", retry_after)


@dataclass(frozen=True, slots=True)
class VerifiedPassword:
    """A password that matched: whose it is, and its new hash when the parameters changed."""

    user_id: int
    new_hash: str | None


async def verify_password(
    services: Services, *, name: str, password: str, client_ip: str
) -> VerifiedPassword:
    """Check ``password`` for the active user ``name``; otherwise InvalidCredentials, or
    TooManyAttempts while this (name, IP) or IP is backing off.

    The stored hash is read in a short session of its own, so no database connection is held
    while argon2 runs. A wrong attempt costs one verification whether or not the name exists,
    and unknown name, wrong password and inactive account raise the same error.
    """
    wait = await services.throttle.retry_after(name, client_ip)
    if wait > 0:
        await audit_now(services, "login_throttled", actor=name, client_ip=client_ip)
        raise TooManyAttempts(wait)
    async with services.sessions() as lookup:
        user = await UserRepository(lookup).get_by_name(name)
    matches = await services.passwords.verify_or_dummy(
        user.password_hash if user is not None else None, password
    )
    if user is None or not matches or not user.is_active:
        await services.throttle.record_failure(name, client_ip)
        await audit_now(
            services,
            "login_failed",
            user_id=user.id if user is not None else None,
            actor=name,
            client_ip=client_ip,
        )
        raise InvalidCredentials
    await services.throttle.record_success(name, client_ip)
    new_hash = None
    if services.passwords.needs_rehash(user.password_hash):
        new_hash = await services.passwords.hash(password)
    return VerifiedPassword(user_id=user.id, new_hash=new_hash)


async def password_login(
    services: Services, session: AsyncSession, *, name: str, password: str, client_ip: str
) -> User:
    """Verify the password (see ``verify_password``), then load the user into ``session``,
    upgrading the stored hash when its parameters are outdated."""
    verified = await verify_password(services, name=name, password=password, client_ip=client_ip)
    user = await UserRepository(session).get(verified.user_id)
    if verified.new_hash is not None:
        user.password_hash = verified.new_hash
    return user


async def register(
    services: Services,
    session: AsyncSession,
    *,
    name: str,
    password: str,
    mobile: str | None,
    city: str | None,
    client_ip: str,
) -> User:
    """Create an account holding the sign-up role (``MSERVICES_SIGNUP_ROLE``, when it exists),
    audited; TooManySignups when ``client_ip`` has registered its allowance for the window.

    The registration is counted before the password is hashed, so a refused one costs no argon2
    hash; a counted one stays counted even if the name turns out to be taken.
    """
    wait = await services.signups.admit(client_ip)
    if wait > 0:
        await audit_now(services, "signup_throttled", actor=name, client_ip=client_ip)
        raise TooManySignups(wait)
    password_hash = await services.passwords.hash(password)
    users = UserRepository(session)
    user = await users.add(name=name, password_hash=password_hash, mobile=mobile, city=city)
    role = await signup_role(session, services.settings.signup_role)
    if role is not None:
        await users.set_roles(user.id, {role.id})
    await AuditRepository(session).add(
        "register",
        user_id=user.id,
        actor=user.name,
        detail=f"role {role.name}" if role is not None else None,
        client_ip=client_ip,
    )
    return user


async def signup_role(session: AsyncSession, name: str) -> Role | None:
    """The role named ``name`` that new accounts receive; None when no name is configured or no
    such role exists (a warning, once per name and process, says so)."""
    if not name:
        return None
    role = await RoleRepository(session).get_by_name(name)
    if role is None and name not in _missing_signup_roles:
        _missing_signup_roles.add(name)
        log.warning(
            "MSERVICES_SIGNUP_ROLE names the role %r, which does not exist: new accounts get "
            "no role until it is created",
            name,
        )
    return role


async def issue_token(
    services: Services, session: AsyncSession, user: User, *, device: str | None
) -> tuple[str, AuthToken]:
    """A new bearer token for ``user`` (the plaintext, returned once, and its row)."""
    token = new_token()
    lifetime = dt.timedelta(days=services.settings.token_absolute_days)
    row = await TokenRepository(session).add(
        user_id=user.id, token_hash=hash_token(token), device=device, expires_at=utcnow() + lifetime
    )
    return token, row


async def revoke_user_tokens(
    session: AsyncSession, user_id: int, *, except_id: int | None = None
) -> list[str]:
    """Revoke the user's tokens (but ``except_id``); returns their hashes for invalidation."""
    return await TokenRepository(session).revoke_all_for_user(user_id, except_id=except_id)


def token_events(token_hashes: Iterable[str]) -> list[Event]:
    """The invalidation events that evict these tokens from every process's cache."""
    return [Event("token", token_hash) for token_hash in token_hashes]


async def audit_now(
    services: Services,
    action: str,
    *,
    user_id: int | None = None,
    actor: str | None = None,
    detail: str | None = None,
    client_ip: str | None = None,
) -> None:
    """Write one audit entry in its own transaction (kept even if the caller rolls back)."""
    async with services.sessions() as session, session.begin():
        await AuditRepository(session).add(
            action, user_id=user_id, actor=actor, detail=detail, client_ip=client_ip
        )

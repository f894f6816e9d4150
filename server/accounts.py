"""Accounts: the rules of every way in (JSON API, browser pages, TCP chat) written once.

``Accounts`` works inside the caller's transaction for one client address and, once logged in,
one login (the actor): register, password login (throttled), token issue, logout, revoking one
or all sessions, password change, profile change and closing the account. Every change is
audited in that transaction and leaves the cache invalidations it requires in ``events``, which
the caller publishes after commit (``Event("token", hash)`` also closes the chat WebSockets and
TCP connections of that session, in every process). The one exception is the audit of a
*failed* password check, written in its own transaction so the refusal's rollback cannot erase
it.

Handlers only parse, call and respond: the JSON API renders the domain errors raised here as its
error envelope, the pages as a message on the form, the TCP chat as an error line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.audit import AuditRepository
from repositories.errors import DomainError, Forbidden, NotFound, Unprocessable
from repositories.models import AuthToken, Role, User, utcnow
from repositories.roles import RoleRepository
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.text import Text, ntext
from server.invalidation import Event
from server.logins import Login
from server.security.policy import password_problems
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
        super().__init__(Text("wrong name or password"))


class Throttled(DomainError):
    """Refused for a while (429 with ``Retry-After``); the message says when to try again.

    Each kind words its own whole sentence (``wait_message``), so a translation can order the
    reason and the wait as its language does."""

    status = 429

    def __init__(self, retry_after: float) -> None:
        seconds = retry_after_header(retry_after)
        super().__init__(self.wait_message(int(seconds)))
        self.retry_after = retry_after
        self.headers["Retry-After"] = seconds

    @staticmethod
    def wait_message(seconds: int) -> Text:
        """Why, and in how many ``seconds`` to try again."""
        return ntext(
            "too many requests; try again in {count} second",
            "too many requests; try again in {count} seconds",
            seconds,
        )


class TooManyAttempts(Throttled):
    """Too many failed logins from this address (for this name); try again later."""

    code = "too_many_attempts"

    @staticmethod
    def wait_message(seconds: int) -> Text:
        """See Throttled."""
        return ntext(
            "too many failed logins; try again in {count} second",
            "too many failed logins; try again in {count} seconds",
            seconds,
        )


class TooManySignups(Throttled):
    """This address has registered as many accounts as the window allows; try again later."""

    code = "too_many_signups"

    @staticmethod
    def wait_message(seconds: int) -> Text:
        """See Throttled."""
        return ntext(
            "too many accounts registered from this address; try again in {count} second",
            "too many accounts registered from this address; try again in {count} seconds",
            seconds,
        )


class WeakPassword(Unprocessable):
    """The new password breaks the policy: ``problems`` names each rule, ``field`` the input."""

    code = "weak_password"

    def __init__(self, field: str, problems: Sequence[Text]) -> None:
        super().__init__(Text("the password does not meet the policy"))
        self.field = field
        self.problems = tuple(problems)


class WrongPassword(Forbidden):
    """A sensitive change confirmed with a password that is not the caller's (``field``)."""

    code = "wrong_password"

    def __init__(self, field: str) -> None:
        super().__init__(Text("the current password is wrong"))
        self.field = field


class LoginRequired(DomainError):
    """An operation on one's own account without a login (a backstop: routes require one)."""

    code = "not_authenticated"
    status = 401

    def __init__(self) -> None:
        super().__init__(Text("log in first"))


@dataclass(frozen=True, slots=True)
class IssuedLogin:
    """A successful login: the user, the bearer token (plaintext, shown once) and its row."""

    user: User
    token: str
    row: AuthToken

    @property
    def token_hash(self) -> str:
        """The stored form of ``token`` (the key of its invalidation events)."""
        return self.row.token_hash


@dataclass(frozen=True, slots=True)
class _VerifiedPassword:
    """A password that matched: whose it is, and its new hash when the parameters changed."""

    user_id: int
    new_hash: str | None


class Accounts:
    """Account operations for one client address (and, once logged in, one login) within one
    transaction; ``events`` collects what to publish after commit."""

    def __init__(
        self,
        services: Services,
        session: AsyncSession,
        *,
        client_ip: str | None,
        actor: Login | None = None,
    ) -> None:
        self.services = services
        self.session = session
        self.client_ip = client_ip or "unknown"
        self.actor = actor
        self.events: list[Event] = []
        self.users = UserRepository(session)
        self.tokens = TokenRepository(session)

    # -- registration and login ------------------------------------------------------------

    async def register(
        self, *, name: str, password: str, mobile: str | None = None, city: str | None = None
    ) -> User:
        """Create an account holding the sign-up role (``MSERVICES_SIGNUP_ROLE``, when it
        exists), audited. WeakPassword when the password breaks the policy, TooManySignups when
        this address has registered its allowance for the window.

        The registration is counted before the password is hashed, so a refused one costs no
        argon2 hash; a counted one stays counted even if the name turns out to be taken.
        """
        self._refuse_weak(password, field="pwd", name=name)
        wait = await self.services.signups.admit(self.client_ip)
        if wait > 0:
            await self._audit_now("signup_throttled", actor=name)
            raise TooManySignups(wait)
        password_hash = await self.services.passwords.hash(password)
        user = await self.users.add(
            name=name, password_hash=password_hash, mobile=mobile, city=city
        )
        role = await _signup_role(self.session, self.services.settings.signup_role)
        if role is not None:
            await self.users.set_roles(user.id, {role.id})
        await self._audit(
            "register",
            user_id=user.id,
            actor=user.name,
            detail=f"role {role.name}" if role is not None else None,
        )
        return user

    async def log_in_or_register(
        self, *, name: str, password: str, device: str
    ) -> IssuedLogin | User:
        """Seed §4.3's ``POST /user`` with only a name and a password: a login (an
        IssuedLogin, or InvalidCredentials / TooManyAttempts) when the name exists, else a
        registration (the new User)."""
        if await self.users.get_by_name(name) is not None:
            return await self.log_in(name=name, password=password, device=device)
        return await self.register(name=name, password=password)

    async def log_in(
        self, *, name: str, password: str, device: str, detail: str | None = None
    ) -> IssuedLogin:
        """Check the password (throttled) and start a session on ``device``, audited as
        ``login`` with ``detail`` (the device when not given)."""
        user = await self.check_password(name=name, password=password)
        return await self.start_session(user, device=device, detail=detail)

    async def check_password(self, *, name: str, password: str) -> User:
        """The active user ``name`` loaded into this session when ``password`` is theirs
        (upgrading an outdated hash); otherwise InvalidCredentials, or TooManyAttempts while
        this (name, address) or address is backing off. Starts no session."""
        verified = await self._verify_password(name, password)
        user = await self.users.get(verified.user_id)
        if verified.new_hash is not None:
            user.password_hash = verified.new_hash
        return user

    async def start_session(
        self, user: User, *, device: str, detail: str | None = None
    ) -> IssuedLogin:
        """Issue a token for ``user`` (who has just proven who they are) on ``device``; the
        user's last device is remembered and the login audited."""
        token, row = await self._issue_token(user, device)
        user.last_login_device = device
        await self._audit(
            "login", user_id=user.id, actor=user.name, detail=detail if detail else device
        )
        return IssuedLogin(user=user, token=token, row=row)

    async def refuse_login(self, user: User, detail: str) -> None:
        """Audit a login whose password was right but which is refused anyway (``detail``
        says why, e.g. a missing permission); no session is started."""
        await self._audit("login_denied", user_id=user.id, actor=user.name, detail=detail)

    # -- sessions ----------------------------------------------------------------------------

    async def log_out(self, *, detail: str | None = None) -> None:
        """End the actor's own session (the token the request was made with)."""
        login = self._login()
        await self.tokens.revoke(login.token_id)
        await self._audit(
            "logout", user_id=login.principal.user_id, actor=login.principal.name, detail=detail
        )
        self.events.append(Event("token", login.token_hash))

    async def end_session(self, token_hash: str, *, detail: str) -> bool:
        """End the session of ``token_hash`` on behalf of its own connection (a TCP client
        that left); False when it had already ended (revoked elsewhere: nothing to audit)."""
        token = await self.tokens.get_by_hash(token_hash)
        if token is None or token.revoked_at is not None:
            return False
        await self.tokens.revoke(token.id)
        user = await self.users.get(token.user_id)
        await self._audit("logout", user_id=user.id, actor=user.name, detail=detail)
        self.events.append(Event("token", token_hash))
        return True

    async def live_sessions(self) -> list[AuthToken]:
        """The actor's sessions that are neither revoked nor expired (idle or absolute)."""
        login = self._login()
        now = utcnow()
        lifetime = self.services.logins.lifetime
        return [
            token
            for token in await self.tokens.list_live(login.principal.user_id, now=now)
            if lifetime.is_live(
                expires_at=token.expires_at,
                last_used_at=token.last_used_at,
                revoked_at=token.revoked_at,
                now=now,
            )
        ]

    async def revoke_session(self, session_id: int) -> None:
        """End one of the actor's sessions; another user's, or an ended one, is NotFound."""
        login = self._login()
        token = await self.tokens.get_for_user(session_id, login.principal.user_id)
        if token.revoked_at is not None:
            raise NotFound(
                Text("session {id} does not exist", id=session_id), code="session_not_found"
            )
        await self.tokens.revoke(token.id)
        await self._audit(
            "session_revoked",
            user_id=login.principal.user_id,
            actor=login.principal.name,
            detail=f"session {token.id}",
        )
        self.events.append(Event("token", token.token_hash))

    async def revoke_all(self, user_id: int, *, except_id: int | None = None) -> int:
        """End every session of ``user_id`` but ``except_id`` (no audit: the caller's change
        is audited); returns how many."""
        revoked = await self.tokens.revoke_all_for_user(user_id, except_id=except_id)
        self.events.extend(_token_events(revoked))
        return len(revoked)

    # -- the actor's own account -------------------------------------------------------------

    async def change_password(self, *, old: str, new: str) -> int:
        """Verify ``old`` (throttled like a login; WrongPassword naming ``old_pwd``), apply
        ``new`` under the policy (WeakPassword naming ``new_pwd``) and end every other session;
        returns how many were ended."""
        login = self._login()
        await self.confirm_password(old, field="old_pwd")
        self._refuse_weak(new, field="new_pwd", name=login.principal.name, old=old)
        user_id = login.principal.user_id
        await self.users.set_password_hash(user_id, await self.services.passwords.hash(new))
        revoked = await self.revoke_all(user_id, except_id=login.token_id)
        await self._audit(
            "password_changed",
            user_id=user_id,
            actor=login.principal.name,
            detail=f"{revoked} other sessions revoked",
        )
        return revoked

    async def update_profile(self, changes: dict[str, Any]) -> User:
        """Change the actor's name, mobile or city (a taken name is a Conflict)."""
        login = self._login()
        user = await self.users.update(login.principal.user_id, changes)
        await self._audit(
            "profile_changed", user_id=user.id, actor=user.name, detail=", ".join(sorted(changes))
        )
        self.events.append(Event("user", str(user.id)))
        return user

    async def choose_language(self, language: str | None) -> None:
        """Remember the actor's language (None: follow the browser) for every session of theirs
        (the cached logins are refreshed in every process)."""
        login = self._login()
        await self.users.update(login.principal.user_id, {"language": language})
        self.events.append(Event("user", str(login.principal.user_id)))

    async def close_account(self, *, password: str) -> None:
        """Confirm with the password (WrongPassword naming ``pwd``), deactivate the account
        (data kept; the last active superuser cannot) and end every session."""
        login = self._login()
        await self.confirm_password(password, field="pwd")
        user_id = login.principal.user_id
        await self.users.update(user_id, {"is_active": False})
        self.events.append(Event("user", str(user_id)))
        await self.revoke_all(user_id)
        await self._audit("account_closed", user_id=user_id, actor=login.principal.name)

    # -- private -----------------------------------------------------------------------------

    async def _issue_token(self, user: User, device: str | None) -> tuple[str, AuthToken]:
        """A new token for ``user`` (its plaintext, returned once, and its row), expiring as
        ``TokenLifetime`` says."""
        token = new_token()
        row = await self.tokens.add(
            user_id=user.id,
            token_hash=hash_token(token),
            device=device,
            expires_at=self.services.logins.lifetime.expires_at(utcnow()),
        )
        return token, row

    def _login(self) -> Login:
        if self.actor is None:
            raise LoginRequired
        return self.actor

    async def _verify_password(self, name: str, password: str) -> _VerifiedPassword:
        """Check ``password`` for the active user ``name``.

        The stored hash is read in a short session of its own, so no database connection is
        held while argon2 runs. A wrong attempt costs one verification whether or not the name
        exists, and unknown name, wrong password and inactive account raise the same error.
        """
        services = self.services
        wait = await services.throttle.retry_after(name, self.client_ip)
        if wait > 0:
            await self._audit_now("login_throttled", actor=name)
            raise TooManyAttempts(wait)
        async with services.sessions() as lookup:
            user = await UserRepository(lookup).get_by_name(name)
        matches = await services.passwords.verify_or_dummy(
            user.password_hash if user is not None else None, password
        )
        if user is None or not matches or not user.is_active:
            await services.throttle.record_failure(name, self.client_ip)
            await self._audit_now(
                "login_failed", user_id=user.id if user is not None else None, actor=name
            )
            raise InvalidCredentials
        await services.throttle.record_success(name, self.client_ip)
        new_hash = None
        if services.passwords.needs_rehash(user.password_hash):
            new_hash = await services.passwords.hash(password)
        return _VerifiedPassword(user_id=user.id, new_hash=new_hash)

    async def confirm_password(self, password: str, *, field: str) -> None:
        """Re-check the actor's password for a sensitive change (throttled like a login);
        WrongPassword naming ``field`` when it is not theirs."""
        try:
            await self._verify_password(self._login().principal.name, password)
        except InvalidCredentials:
            raise WrongPassword(field) from None

    @staticmethod
    def _refuse_weak(password: str, *, field: str, name: str, old: str | None = None) -> None:
        problems = password_problems(password, name=name, old_password=old)
        if problems:
            raise WeakPassword(field, problems)

    async def _audit(
        self, action: str, *, user_id: int | None, actor: str | None, detail: str | None = None
    ) -> None:
        """Record ``action`` in this transaction."""
        await AuditRepository(self.session).add(
            action, user_id=user_id, actor=actor, detail=detail, client_ip=self.client_ip
        )

    async def _audit_now(
        self, action: str, *, user_id: int | None = None, actor: str | None = None
    ) -> None:
        """Record ``action`` in a transaction of its own (kept when the caller rolls back)."""
        async with self.services.sessions() as session, session.begin():
            await AuditRepository(session).add(
                action, user_id=user_id, actor=actor, client_ip=self.client_ip
            )


async def _signup_role(session: AsyncSession, name: str) -> Role | None:
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


def _token_events(token_hashes: Iterable[str]) -> list[Event]:
    """The invalidation events that end these sessions in every process."""
    return [Event("token", token_hash) for token_hash in token_hashes]

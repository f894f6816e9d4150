"""Email verification and password recovery: the rules the JSON API and the pages both obey.

A ``Recovery`` works inside the caller's transaction for one client address. It leaves what must
happen after commit in two lists: ``events`` (cache invalidations to publish, as ``Admin`` does)
and ``outbox`` (mail to send; see ``server.mail``). Nothing is mailed for a change that is rolled
back.

- **Links** carry a one-time token (``repositories/one_time_tokens.py``): stored only as its
  SHA-256, single use, expiring after ``MSERVICES_EMAIL_VERIFY_HOURS`` (24) or
  ``MSERVICES_PASSWORD_RESET_HOURS`` (1). A newer link of the same purpose retires older ones.
- **Verification** confirms the address the link was sent to: after a change of address an old
  link confirms nothing.
- **Reset requests** answer the same whether or not the address has an account. They are
  throttled per client IP (``Throttled``, 429) and per address (beyond its allowance nothing more
  is sent, and the answer is unchanged), the address counted whether it exists or not. Only a
  *verified* address receives a reset link: an unverified one may be a typo, and a typo must not
  hand the account to whoever owns the mistyped mailbox.
- **A reset** applies the password policy, stores an argon2 hash, and ends every session of the
  user (each revoked token becomes a ``token`` event, as the admin revocation publishes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.audit import AuditRepository
from repositories.emails import UserEmailRepository
from repositories.errors import Conflict, DomainError
from repositories.models import User, utcnow
from repositories.one_time_tokens import (
    RESET_PASSWORD,
    VERIFY_EMAIL,
    OneTimeTokenRepository,
    Purpose,
)
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.text import Text, ntext
from server.accounts import Accounts, Throttled, WeakPassword
from server.i18n import DEFAULT_LANGUAGE, supported
from server.invalidation import Event
from server.logins import Login
from server.mail import Mail, compose
from server.principal import Principal
from server.security.policy import password_problems
from server.security.tokens import hash_token, new_token
from server.services import Services

Clock = Callable[[], dt.datetime]


class InvalidLink(DomainError):
    """The link's token is unknown, expired or already used (deliberately not told apart)."""

    code = "invalid_link"
    status = 400

    def __init__(self) -> None:
        super().__init__(Text("this link is invalid, has expired or has already been used"))


class NoEmail(Conflict):
    """The account has no email address to verify."""

    code = "no_email"

    def __init__(self) -> None:
        super().__init__(Text("the account has no email address; set one first"))


class AlreadyVerified(Conflict):
    """The address is verified already; no link is sent."""

    code = "email_already_verified"

    def __init__(self) -> None:
        super().__init__(Text("this email address is already verified"))


class TooManyResetRequests(Throttled):
    """This address has asked for as many reset links as the window allows."""

    code = "too_many_reset_requests"

    @staticmethod
    def wait_message(seconds: int) -> Text:
        """See Throttled."""
        return ntext(
            "too many password reset requests from this address; try again in {count} second",
            "too many password reset requests from this address; try again in {count} seconds",
            seconds,
        )


class Recovery:
    """Email verification and password reset for one client, within one transaction.

    ``language`` is the language of the request being served: mail goes out in the
    recipient account's chosen language, else in that one."""

    def __init__(
        self,
        session: AsyncSession,
        services: Services,
        *,
        client_ip: str | None,
        language: str = DEFAULT_LANGUAGE,
        clock: Clock = utcnow,
    ) -> None:
        self.session = session
        self.services = services
        self.client_ip = client_ip
        self.language = language
        self.clock = clock
        self.events: list[Event] = []
        self.outbox: list[Mail] = []
        self.tokens = OneTimeTokenRepository(session)
        self.emails = UserEmailRepository(session)

    # -- email --------------------------------------------------------------------------------

    async def change_email(self, actor: Login, email: str | None, *, password: str) -> User:
        """Give the actor's account ``email`` (normalised; None removes it), confirmed with the
        actor's ``password``: a stolen session must not be able to point the account at an
        address whose reset link its thief would receive. A new address is unverified and is
        sent a verification link; the same address again changes nothing."""
        accounts = Accounts(self.services, self.session, client_ip=self.client_ip, actor=actor)
        await accounts.confirm_password(password, field="pwd")
        user = await UserRepository(self.session).get(actor.principal.user_id)
        if email == user.email:
            return user
        await self.emails.set_email(user, email)
        await self.tokens.retire_for_user(user.id, VERIFY_EMAIL, now=self.clock())
        await self._audit("email_changed", user, "removed" if email is None else "set")
        self.events.append(Event("user", str(user.id)))
        if email is not None:
            await self._send_verification(user, email)
        return user

    async def request_verification(self, actor: Principal) -> User:
        """Send a new verification link to the actor's address (older links stop working)."""
        user = await UserRepository(self.session).get(actor.user_id)
        if user.email is None:
            raise NoEmail
        if user.email_verified:
            raise AlreadyVerified
        await self.tokens.retire_for_user(user.id, VERIFY_EMAIL, now=self.clock())
        await self._send_verification(user, user.email)
        return user

    async def verify_email(self, token: str) -> User:
        """Mark the address the link was sent to verified; InvalidLink when the token is unknown,
        used, expired, or the account's address has changed since."""
        row = await self._consume(token, VERIFY_EMAIL)
        user = await UserRepository(self.session).get(row.user_id)
        if row.email is None or not await self.emails.mark_verified(user.id, row.email):
            raise InvalidLink
        await self.session.refresh(user)
        await self._audit("email_verified", user, None)
        self.events.append(Event("user", str(user.id)))
        return user

    # -- password reset -----------------------------------------------------------------------

    async def request_password_reset(self, email: str) -> None:
        """Send a reset link to ``email`` if it is the verified address of an active account;
        the caller learns nothing either way. TooManyResetRequests when this client IP is over
        its allowance; over the address's allowance nothing is sent."""
        wait = await self.services.reset_ips.admit(self.client_ip or "unknown")
        if wait > 0:
            raise TooManyResetRequests(wait)
        if await self.services.reset_addresses.admit(email) > 0:
            return
        user = await self.emails.get_by_email(email)
        if user is None or not user.is_active or not user.email_verified:
            return
        now = self.clock()
        await self.tokens.retire_for_user(user.id, RESET_PASSWORD, now=now)
        hours = self.services.settings.password_reset_hours
        token = await self._issue(user, RESET_PASSWORD, dt.timedelta(hours=hours), email=email)
        link = f"{self.services.settings.effective_public_url}/reset/{token}"
        self.outbox.append(
            compose(
                to=email,
                subject=Text("mservices: reset your password"),
                text=Text(
                    "Hello {name},\n\n"
                    "Someone (hopefully you) asked to reset the password of your mservices "
                    "account. Open the link below to choose a new password; it is valid for "
                    "{duration} and can be used once:\n\n{link}\n\n"
                    "If you did not ask for this, ignore this email; your password will not "
                    "change.\n",
                    name=user.name,
                    duration=_duration(hours),
                    link=link,
                ),
                link=link,
                language=self._language_of(user),
            )
        )
        await self._audit("password_reset_requested", user, None)

    async def reset_password(self, token: str, new_password: str) -> User:
        """Set a new password with a reset link's token and end every session of the user.

        The policy is checked before the token is consumed, so a refused password leaves the
        link usable; then one conditional UPDATE consumes it (of two concurrent resets, one wins).
        """
        now = self.clock()
        row = await self.tokens.get_usable(hash_token(token), RESET_PASSWORD, now=now)
        if row is None:
            raise InvalidLink
        user = await UserRepository(self.session).get(row.user_id)
        problems = password_problems(new_password, name=user.name)
        if problems:
            raise WeakPassword("new_pwd", problems)
        await self._consume(token, RESET_PASSWORD)
        if not user.is_active:
            raise InvalidLink
        user.password_hash = await self.services.passwords.hash(new_password)
        await self.session.flush()
        await self.tokens.retire_for_user(user.id, RESET_PASSWORD, now=now)
        revoked = await TokenRepository(self.session).revoke_all_for_user(user.id)
        await self._audit("password_reset", user, f"{len(revoked)} sessions revoked")
        self.events.append(Event("user", str(user.id)))
        self.events.extend(Event("token", token_hash) for token_hash in revoked)
        return user

    # -- helpers ------------------------------------------------------------------------------

    async def _send_verification(self, user: User, email: str) -> None:
        hours = self.services.settings.email_verify_hours
        token = await self._issue(user, VERIFY_EMAIL, dt.timedelta(hours=hours), email=email)
        link = f"{self.services.settings.effective_public_url}/verify/{token}"
        self.outbox.append(
            compose(
                to=email,
                subject=Text("mservices: verify your email address"),
                text=Text(
                    "Hello {name},\n\n"
                    "Please open the link below to confirm that {email} is your email address; "
                    "it is valid for {duration} and can be used once:\n\n{link}\n\n"
                    "If you did not enter this address on mservices, ignore this email.\n",
                    name=user.name,
                    email=email,
                    duration=_duration(hours),
                    link=link,
                ),
                link=link,
                language=self._language_of(user),
            )
        )
        await self._audit("email_verification_sent", user, None)

    def _language_of(self, user: User) -> str:
        """The language to write to ``user`` in: the account's choice, else the request's."""
        return supported(user.language) or self.language

    async def _issue(
        self, user: User, purpose: Purpose, lifetime: dt.timedelta, *, email: str | None
    ) -> str:
        token = new_token()
        now = self.clock()
        await self.tokens.add(
            user_id=user.id,
            purpose=purpose,
            token_hash=hash_token(token),
            expires_at=now + lifetime,
            email=email,
            now=now,
        )
        return token

    async def _consume(self, token: str, purpose: Purpose) -> _Consumed:
        """Consume the token (InvalidLink unless this caller is the one that used it)."""
        now = self.clock()
        token_hash = hash_token(token)
        row = await self.tokens.get_usable(token_hash, purpose, now=now)
        if row is None or not await self.tokens.consume(token_hash, purpose, now=now):
            raise InvalidLink
        return _Consumed(user_id=row.user_id, email=row.email)

    async def _audit(self, action: str, user: User, detail: str | None) -> None:
        await AuditRepository(self.session).add(
            action, user_id=user.id, actor=user.name, detail=detail, client_ip=self.client_ip
        )


class _Consumed:
    """What a consumed token said: whose it was and the address it was sent to."""

    __slots__ = ("email", "user_id")

    def __init__(self, *, user_id: int, email: str | None) -> None:
        self.user_id = user_id
        self.email = email


def _duration(hours: float) -> Text:
    """``hours`` in words for a message (``1 hour``, ``30 minutes``), translated with it."""
    if hours >= 1 and float(hours).is_integer():
        return ntext("{count} hour", "{count} hours", int(hours))
    return ntext("{count} minute", "{count} minutes", round(hours * 60))

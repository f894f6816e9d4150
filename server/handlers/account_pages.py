"""Self-service pages: sign up, the account page (profile, email, password, sessions), forgotten
password and the links mailed for verification and reset.

Every form is plain HTML with ``xsrf_form_html()`` (Tornado checks the token on POST) and every
value is escaped by the templates. The account actions answer post/redirect/get: a 302 back to
``/account`` with a flash message saying what changed or why nothing did; a refused change is
rolled back first, because the redirect is a success status and would commit it.

URLs:

    GET|POST /signup                      registration form; logs the new account in
    GET      /account                     profile, email, password, language, live sessions
    POST     /account/profile             mobile, city ("" clears)
    POST     /account/email               email ("" removes); a new address is sent a link
    POST     /account/verification        send a new verification link
    POST     /account/password            old_pwd, new_pwd, new_pwd2; other sessions end
    POST     /account/sessions/{id}/end   end one session (this one: logged out)
    GET|POST /forgot                      email; the same answer whatever the address
    GET|POST /reset/{token}               new_pwd, new_pwd2; every session ends
    GET|POST /verify/{token}              a button (a mail scanner's GET uses nothing up)

The language section posts to ``/language`` (``server/handlers/language.py``), which stores
the choice on the account. Messages are ``Text``, translated for the reader as they are shown.

The account operations go through the small wrappers at the top of this module, which call
``server.accounts`` and the repositories as the JSON API does, so they can be pointed at an
``Accounts`` service in one place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tornado.routing import Rule

from repositories.errors import DomainError
from repositories.models import AuthToken, User, utcnow
from repositories.one_time_tokens import RESET_PASSWORD, OneTimeTokenRepository
from repositories.users import UserRepository
from schemas.recovery import LINK_TOKEN_PATTERN, email_problem, normalise_email
from schemas.text import Joined, Text, ntext
from schemas.user import ProfileUpdate, RegisterRequest
from server.accounts import Accounts, Throttled, WeakPassword, WrongPassword
from server.errors import Message
from server.handlers.base import SESSION_COOKIE, FormError, PageHandler, validate_form
from server.handlers.recovery import recovery_for
from server.i18n import locale_for, translate
from server.logins import Login
from server.permissions import LOGIN, PUBLIC, route
from server.recovery import InvalidLink, Recovery
from server.security.tokens import hash_token

ACCOUNT_URL = "/account"
MAX_FIELD = 1024
TOKEN = LINK_TOKEN_PATTERN.strip("^$")
WRONG_PASSWORD = Text("The current password is not correct")
NEW_PASSWORDS_DIFFER = Text("The two new passwords do not match")


def invalid_email(error: ValueError) -> Text:
    """Why a typed address was refused (``normalise_email``'s reason), as a whole sentence."""
    return Text("The email address is not valid: {reason}", reason=email_problem(error))


# -- account operations: small wrappers over ``server.accounts.Accounts`` ----------------------


def _accounts(handler: PageHandler, actor: Login | None = None) -> Accounts:
    """An ``Accounts`` in the handler's transaction whose events are published after commit."""
    accounts = Accounts(
        handler.services, handler.db, client_ip=handler.request.remote_ip, actor=actor
    )

    async def publish() -> None:
        for event in accounts.events:
            await handler.services.invalidation.publish(event)

    handler.after_commit(publish)
    return accounts


async def _register(handler: PageHandler, form: RegisterRequest) -> User:
    """Create the account (policy, throttle, sign-up role, audit: ``Accounts.register``)."""
    return await _accounts(handler).register(
        name=form.name, password=form.pwd, mobile=form.mobile, city=form.city
    )


async def _log_in(handler: PageHandler, user: User) -> None:
    """Start a session for ``user`` (audited) and set the session cookie."""
    device = (handler.request.headers.get("User-Agent") or "browser")[:64]
    issued = await _accounts(handler).start_session(user, device=device, detail="browser")
    handler.start_session(issued.token)


async def _change_profile(handler: PageHandler, login: Login, changes: dict[str, Any]) -> User:
    """Apply profile changes, audited and evicted from caches."""
    return await _accounts(handler, login).update_profile(changes)


async def _change_password(handler: PageHandler, login: Login, old: str, new: str) -> int:
    """Check the current password (throttled like a login), apply the policy, store the new
    hash and end every other session; returns how many ended."""
    try:
        return await _accounts(handler, login).change_password(old=old, new=new)
    except WrongPassword:
        raise FormError(WRONG_PASSWORD) from None
    except WeakPassword as weak:
        raise FormError(
            Text(
                "The new password does not meet the requirements: {problems}",
                problems=Joined(weak.problems),
            )
        ) from None


async def _end_session(handler: PageHandler, login: Login, session_id: int) -> None:
    """End one of the caller's sessions."""
    await _accounts(handler, login).revoke_session(session_id)


async def _live_sessions(handler: PageHandler, login: Login) -> list[AuthToken]:
    """The caller's sessions that are neither revoked nor expired (idle or absolute)."""
    return await _accounts(handler, login).live_sessions()


# -- pages --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A live session as the account page shows it."""

    id: int
    device: str
    created_at: str
    last_used_at: str
    current: bool


class AccountPageBase(PageHandler):
    """Shared by the pages of this module: form fields and the client address."""

    def field(self, name: str) -> str:
        """A form field, at most ``MAX_FIELD`` characters ("" when absent)."""
        return (self.get_body_argument(name, "") or "")[:MAX_FIELD]

    def client_ip(self) -> str:
        """The caller's address (the proxy's view when ``xheaders`` is on)."""
        return self.request.remote_ip or "unknown"

    def refuse(self, status: int, error: DomainError | FormError) -> None:
        """Set the status of a refused form (429 carries ``Retry-After``)."""
        self.set_status(status)
        if isinstance(error, Throttled):
            self.set_header("Retry-After", error.headers["Retry-After"])


class SignupPageHandler(AccountPageBase):
    """``/signup``: the registration form; the new account is logged in."""

    async def get(self) -> None:
        """Show the form (or go to the account page when already logged in)."""
        if self.current_user is not None:
            self.redirect_to(ACCOUNT_URL)
        await self.render_page("account/signup.html", error=None, form={})

    async def post(self) -> None:
        """Register, log in, and go to the account page; or show the form again with why not."""
        typed = {key: self.field(key) for key in ("name", "mobile", "city")}
        try:
            if self.field("pwd") != self.field("pwd2"):
                raise FormError(Text("The two passwords do not match"))
            form = validate_form(
                RegisterRequest,
                {
                    "name": typed["name"],
                    "pwd": self.field("pwd"),
                    "mobile": typed["mobile"] or None,
                    "city": typed["city"] or None,
                },
            )
            user = await _register(self, form)
        except WeakPassword as weak:
            self.set_status(422)
            error = Text(
                "The password does not meet the requirements: {problems}",
                problems=Joined(weak.problems),
            )
            await self.render_page("account/signup.html", error=self.text(error), form=typed)
            return
        except (FormError, DomainError) as refused:  # name taken (409), too many sign-ups (429)
            self.refuse(refused.status if isinstance(refused, DomainError) else 422, refused)
            await self.render_page(
                "account/signup.html", error=self.text(refused.message), form=typed
            )
            return
        await _log_in(self, user)
        self.flash(Text("Signed up; welcome, {name}", name=user.name))
        self.redirect_to(ACCOUNT_URL)


class AccountPageHandler(AccountPageBase):
    """``GET /account``: the caller's profile, email, password form and live sessions."""

    async def get(self) -> None:
        """Render the page from the database (not the login cache: it must be current)."""
        login = self.current_login()
        user = await UserRepository(self.db).get(login.principal.user_id)
        sessions = [
            SessionRow(
                id=token.id,
                device=token.device or self.text(Text("Unknown device")),
                created_at=_when(token.created_at),
                last_used_at=_when(token.last_used_at),
                current=token.id == login.token_id,
            )
            for token in await _live_sessions(self, login)
        ]
        await self.render_page("account/account.html", user=user, sessions=sessions)


class AccountActionHandler(AccountPageBase):
    """``POST /account/{profile|email|verification|password}`` and
    ``POST /account/sessions/{id}/end``: one change, then back to ``/account``."""

    async def post(self, action: str, session_id: str | None = None) -> None:
        """Apply the action, flash what happened, redirect (post/redirect/get)."""
        login = self.current_login()
        recovery = recovery_for(self)
        handlers: dict[str, Callable[[], Awaitable[Text]]] = {
            "profile": lambda: self._profile(login),
            "email": lambda: self._email(login, recovery),
            "verification": lambda: self._verification(login, recovery),
            "password": lambda: self._password(login),
            "end": lambda: self._end(login, int(session_id or 0)),
        }
        try:
            message = await handlers[action]()
        except (DomainError, FormError) as error:
            await self.db.rollback()
            recovery.events.clear()
            recovery.outbox.clear()
            self.flash(error.message, level="error")
            self.redirect_to(ACCOUNT_URL)
        if action == "end" and int(session_id or 0) == login.token_id:
            self.clear_cookie(SESSION_COOKIE, path="/")
            # Logged out: the login form speaks this browser's language, so does the message.
            self.current_user = None
            self.flash(translate(locale_for(self.language()), message))
            self.redirect_to("/login")
        self.flash(message)
        self.redirect_to(ACCOUNT_URL)

    async def _profile(self, login: Login) -> Text:
        changes = {"mobile": self.field("mobile") or None, "city": self.field("city") or None}
        form = validate_form(ProfileUpdate, changes)
        await _change_profile(self, login, form.model_dump(include={"mobile", "city"}))
        return Text("Profile saved")

    async def _email(self, login: Login, recovery: Recovery) -> Text:
        typed = self.field("email").strip()
        try:
            email = normalise_email(typed) if typed else None
        except ValueError as error:
            raise FormError(invalid_email(error)) from None
        before = (await UserRepository(self.db).get(login.principal.user_id)).email
        try:
            await recovery.change_email(login, email, password=self.get_body_argument("pwd", ""))
        except WrongPassword:
            raise FormError(WRONG_PASSWORD) from None
        if email == before:
            return Text("The email address is unchanged")
        if email is None:
            return Text("The email address was removed")
        return Text("Email address saved; a verification link was sent to {email}", email=email)

    async def _verification(self, login: Login, recovery: Recovery) -> Text:
        user = await recovery.request_verification(login.principal)
        return Text("A verification link was sent to {email}", email=user.email)

    async def _password(self, login: Login) -> Text:
        if self.field("new_pwd") != self.field("new_pwd2"):
            raise FormError(NEW_PASSWORDS_DIFFER)
        ended = await _change_password(self, login, self.field("old_pwd"), self.field("new_pwd"))
        return ntext(
            "Password changed; {count} other session was ended",
            "Password changed; {count} other sessions were ended",
            ended,
        )

    async def _end(self, login: Login, session_id: int) -> Text:
        await _end_session(self, login, session_id)
        return Text("Session ended")


class ForgotPageHandler(AccountPageBase):
    """``/forgot``: ask for a reset link; the answer is the same for every address."""

    async def get(self) -> None:
        """Show the form."""
        await self.render_page("account/forgot.html", error=None, sent=False, email="")

    async def post(self) -> None:
        """Mail a link if the address is the verified one of an account; say the same anyway."""
        typed = self.field("email").strip()[:254]
        try:
            email = normalise_email(typed)
        except ValueError as error:
            self.set_status(422)
            await self.render_page(
                "account/forgot.html",
                error=self.text(invalid_email(error)),
                sent=False,
                email=typed,
            )
            return
        try:
            await recovery_for(self).request_password_reset(email)
        except Throttled as error:
            self.refuse(429, error)
            await self.render_page(
                "account/forgot.html", error=self.text(error.message), sent=False, email=typed
            )
            return
        await self.render_page("account/forgot.html", error=None, sent=True, email="")


class ResetPageHandler(AccountPageBase):
    """``/reset/{token}``: choose a new password with a mailed link; every session ends."""

    def set_default_headers(self) -> None:
        """Never send this page's URL (it holds the token) as a Referer."""
        super().set_default_headers()
        self.set_header("Referrer-Policy", "no-referrer")

    async def get(self, token: str) -> None:
        """The form, or why the link cannot be used (nothing is used up by looking)."""
        usable = await OneTimeTokenRepository(self.db).get_usable(
            hash_token(token), RESET_PASSWORD, now=utcnow()
        )
        if usable is None:
            self.set_status(400)
        await self.render_page("account/reset.html", error=None, invalid=usable is None)

    async def post(self, token: str) -> None:
        """Set the password and send the visitor to the login form."""
        error: Message | None = None
        try:
            if self.field("new_pwd") != self.field("new_pwd2"):
                raise FormError(NEW_PASSWORDS_DIFFER)
            await recovery_for(self).reset_password(token, self.field("new_pwd"))
        except InvalidLink:
            self.set_status(400)
            await self.render_page("account/reset.html", error=None, invalid=True)
            return
        except WeakPassword as weak:
            error = Text(
                "The new password does not meet the requirements: {problems}",
                problems=Joined(weak.problems),
            )
        except FormError as refused:
            error = refused.message
        if error is not None:
            self.set_status(422)
            await self.render_page("account/reset.html", error=self.text(error), invalid=False)
            return
        if self.login is not None:  # this browser's session ended with the others
            self.clear_cookie(SESSION_COOKIE, path="/")
        self.flash(Text("Your password was reset and every session ended; log in with the new one"))
        self.redirect_to("/login")


class VerifyPageHandler(AccountPageBase):
    """``/verify/{token}``: confirm an email address with a mailed link (a button, so that a
    mail scanner fetching the link uses nothing up)."""

    def set_default_headers(self) -> None:
        """Never send this page's URL (it holds the token) as a Referer."""
        super().set_default_headers()
        self.set_header("Referrer-Policy", "no-referrer")

    async def get(self, token: str) -> None:
        """The confirmation button."""
        await self.render_page("account/verify.html", invalid=False, done=None)

    async def post(self, token: str) -> None:
        """Consume the token and mark the address verified."""
        try:
            user = await recovery_for(self).verify_email(token)
        except InvalidLink:
            self.set_status(400)
            await self.render_page("account/verify.html", invalid=True, done=None)
            return
        await self.render_page("account/verify.html", invalid=False, done=user.email)


def _when(moment: dt.datetime) -> str:
    """A timestamp as the pages show it (UTC, to the minute)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def account_page_routes(deps: dict[str, Any]) -> list[Rule]:
    """The routes of this module (the URL design is in the module docstring)."""
    return [
        route(r"/signup", SignupPageHandler, deps, name="signup", need=PUBLIC),
        route(ACCOUNT_URL, AccountPageHandler, deps, name="account", need=LOGIN),
        route(
            rf"{ACCOUNT_URL}/(?P<action>profile|email|verification|password)",
            AccountActionHandler,
            deps,
            name="account-action",
            need=LOGIN,
        ),
        route(
            rf"{ACCOUNT_URL}/sessions/(?P<session_id>[0-9]{{1,18}})/(?P<action>end)",
            AccountActionHandler,
            deps,
            name="account-session-end",
            need=LOGIN,
        ),
        route(r"/forgot", ForgotPageHandler, deps, name="forgot", need=PUBLIC),
        route(rf"/reset/(?P<token>{TOKEN})", ResetPageHandler, deps, name="reset", need=PUBLIC),
        route(rf"/verify/(?P<token>{TOKEN})", VerifyPageHandler, deps, name="verify", need=PUBLIC),
    ]

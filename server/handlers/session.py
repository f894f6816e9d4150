"""Browser sessions: the login form (``/login``) and ``POST /logout``.

The session cookie is signed, HttpOnly and SameSite=Lax (Secure over https) and holds a bearer
token whose row lives in ``auth_token``, so logout, a password change and deactivation end
browser sessions exactly like API sessions. The rules are ``Accounts``'; the ``next`` target is
checked by ``server/local_paths.py`` like ``/redirect``'s.
"""

from __future__ import annotations

from schemas.text import Text
from server.accounts import Accounts, InvalidCredentials, TooManyAttempts
from server.handlers.base import SESSION_COOKIE, PageHandler
from server.i18n import locale_for, supported, translate
from server.local_paths import local_or_home

MAX_FIELD = 1024


class LoginPageHandler(PageHandler):
    """``/login``: the form (GET) and its submission (POST, XSRF-checked by Tornado)."""

    def next_target(self) -> str:
        """Where to go after logging in: ``next`` (form field, else query) when it is a local
        path, else ``/``."""
        target = self.get_body_argument("next", None, strip=False)
        if target is None:
            target = self.get_query_argument("next", "/", strip=False)
        return local_or_home(target)

    async def get(self) -> None:
        """Show the form (or go on when already logged in)."""
        target = self.next_target()
        if self.current_user is not None:
            self.redirect_to(target)
        await self.render_page("login.html", error=None, name="", next_url=target)

    async def post(self) -> None:
        """Check the credentials (throttled like the API); set the session cookie, or re-render
        the form with the reason."""
        name = self.get_body_argument("name", "")[:MAX_FIELD]
        password = self.get_body_argument("pwd", "")[:MAX_FIELD]
        target = self.next_target()
        accounts = Accounts(self.services, self.db, client_ip=self.request.remote_ip)
        device = (self.request.headers.get("User-Agent") or "browser")[:64]
        try:
            if not name or not password:
                raise InvalidCredentials
            issued = await accounts.log_in(
                name=name, password=password, device=device, detail="browser"
            )
        except InvalidCredentials as error:
            self.set_status(401)
            await self.render_page(
                "login.html", error=self.text(error.message), name=name, next_url=target
            )
            return
        except TooManyAttempts as error:
            self.set_status(429)
            self.set_header("Retry-After", error.headers["Retry-After"])
            await self.render_page(
                "login.html", error=self.text(error.message), name=name, next_url=target
            )
            return
        self.start_session(issued.token)
        # The next page speaks the account's language when it has one: so does the greeting.
        language = supported(issued.user.language) or self.language()
        welcome = Text("Welcome, {name}", name=issued.user.name)
        self.flash(translate(locale_for(language), welcome))
        self.redirect_to(target)


class LogoutHandler(PageHandler):
    """``POST /logout``: revoke the session's token and clear the cookie (XSRF-checked)."""

    async def post(self) -> None:
        """Log out and go home."""
        if self.login is not None:
            accounts = Accounts(
                self.services, self.db, client_ip=self.request.remote_ip, actor=self.login
            )
            await accounts.log_out(detail="browser")
            self.publish_after_commit(*accounts.events)
        self.clear_cookie(SESSION_COOKIE, path="/")
        # From here on a visitor: the next page speaks this browser's language, so does this.
        self.current_user = None
        self.flash(translate(locale_for(self.language()), Text("You are logged out")))
        self.redirect_to("/")

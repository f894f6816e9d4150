"""Browser sessions: the login form (``/login``) and ``POST /logout``.

The session cookie is signed, HttpOnly and SameSite=Lax (Secure over https) and holds a bearer
token whose row lives in ``auth_token``, so logout, a password change and deactivation end
browser sessions exactly like API sessions.
"""

from __future__ import annotations

from repositories.audit import AuditRepository
from repositories.tokens import TokenRepository
from server.accounts import InvalidCredentials, TooManyAttempts, issue_token, password_login
from server.handlers.base import SESSION_COOKIE, PageHandler
from server.invalidation import Event

MAX_FIELD = 1024


def safe_next(target: str | None) -> str:
    """A local path to return to after login; anything else (another host, a scheme) is ``/``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class LoginPageHandler(PageHandler):
    """``/login``: the form (GET) and its submission (POST, XSRF-checked by Tornado)."""

    async def get(self) -> None:
        """Show the form (or go on when already logged in)."""
        target = safe_next(self.get_query_argument("next", "/"))
        if self.current_user is not None:
            self.redirect_to(target)
        await self.render_page("login.html", error=None, name="", next_url=target)

    async def post(self) -> None:
        """Check the credentials (throttled like the API); set the session cookie, or re-render
        the form with the reason."""
        name = self.get_body_argument("name", "")[:MAX_FIELD]
        password = self.get_body_argument("pwd", "")[:MAX_FIELD]
        target = safe_next(self.get_body_argument("next", "/"))
        client_ip = self.request.remote_ip or "unknown"
        try:
            if not name or not password:
                raise InvalidCredentials
            user = await password_login(
                self.services, self.db, name=name, password=password, client_ip=client_ip
            )
        except InvalidCredentials as error:
            self.set_status(401)
            await self.render_page("login.html", error=error.message, name=name, next_url=target)
            return
        except TooManyAttempts as error:
            self.set_status(429)
            self.set_header("Retry-After", error.headers["Retry-After"])
            await self.render_page("login.html", error=error.message, name=name, next_url=target)
            return
        device = (self.request.headers.get("User-Agent") or "browser")[:64]
        token, _ = await issue_token(self.services, self.db, user, device=device)
        user.last_login_device = device
        await AuditRepository(self.db).add(
            "login", user_id=user.id, actor=user.name, detail="browser", client_ip=client_ip
        )
        self.start_session(token)
        self.flash(f"欢迎, {user.name}")
        self.redirect_to(target)


class LogoutHandler(PageHandler):
    """``POST /logout``: revoke the session's token and clear the cookie (XSRF-checked)."""

    async def post(self) -> None:
        """Log out and go home."""
        login = self.login
        if login is not None:
            await TokenRepository(self.db).revoke(login.token_id)
            await AuditRepository(self.db).add(
                "logout",
                user_id=login.principal.user_id,
                actor=login.principal.name,
                detail="browser",
                client_ip=self.request.remote_ip,
            )
            self.publish_after_commit(Event("token", login.token_hash))
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.flash("已退出登录")
        self.redirect_to("/")

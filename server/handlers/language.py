"""``POST /language``: the header's language switch and the account page's language choice."""

from __future__ import annotations

from schemas.text import Text
from server.accounts import Accounts
from server.handlers.base import LANGUAGE_COOKIE, PageHandler
from server.i18n import LANGUAGES
from server.local_paths import FALLBACK, local_target

LANGUAGE_COOKIE_DAYS = 365


class LanguageHandler(PageHandler):
    """Remember the chosen language in a cookie and, for a logged-in user, on the account;
    then go back to the page it was chosen on."""

    async def post(self) -> None:
        """``language`` (``zh_CN``, ``en_US``, or ``auto`` to follow the browser) and ``next``."""
        choice = self.get_body_argument("language", "")
        target = local_target(self.get_body_argument("next", FALLBACK)) or FALLBACK
        if choice != "auto" and choice not in LANGUAGES:
            self.flash(Text("Choose one of the languages offered."), level="error")
            self.redirect_to(target)
        language = None if choice == "auto" else choice
        if self.login is not None:
            accounts = Accounts(
                self.services, self.db, client_ip=self.request.remote_ip, actor=self.login
            )
            await accounts.choose_language(language)
            self.publish_after_commit(*accounts.events)
        if language is None:
            self.clear_cookie(LANGUAGE_COOKIE, path="/")
        else:
            self.set_cookie(
                LANGUAGE_COOKIE,
                language,
                expires_days=LANGUAGE_COOKIE_DAYS,
                path="/",
                samesite="Lax",
                httponly=True,
            )
        self.redirect_to(target)

"""The fallback for unknown routes: 404 as JSON on API paths, as an HTML page elsewhere."""

from __future__ import annotations

import logging

from server.handlers.base import BaseHandler

log = logging.getLogger("mservices.request")

API_PREFIXES = ("/api/", "/user", "/openapi.json")


class NotFoundHandler(BaseHandler):
    """Every unknown route answers 404 in the shape its caller expects."""

    # Tornado answers 405 before ``prepare`` to a method outside this list; an unknown path is
    # 404 whatever the method, so the methods clients and scanners actually send are all here.
    SUPPORTED_METHODS = (*BaseHandler.SUPPORTED_METHODS, "TRACE", "CONNECT")

    async def prepare(self) -> None:
        """Answer 404 before any verb method (every method is unknown here); a page first
        learns who is asking, so it shows their nav and account area."""
        self.bind_log_context()  # BaseHandler.prepare, which would, is not called
        self.api = self.wants_json()
        if not self.api:
            await self.know_the_caller()
        self.send_error(404)

    async def know_the_caller(self) -> None:
        """Resolve the caller and warm their menus in the cache the error page reads; any
        failure (the database is down) leaves a visitor's page without menus, still a 404."""
        try:
            self.current_user = await self.authenticate()
            await self.services.menus.access_for(self.current_user)
        except Exception as error:
            log.warning("a 404 page could not learn who is asking: %s", error)

    def wants_json(self) -> bool:
        """JSON for API paths and clients that accept JSON but not HTML."""
        if self.request.path.startswith(API_PREFIXES):
            return True
        accept = self.request.headers.get("Accept", "")
        return "application/json" in accept and "text/html" not in accept

    def check_xsrf_cookie(self) -> None:
        """Unknown routes change nothing, so a missing XSRF token is not what to report."""

"""The route table, readable top to bottom: every URL mservices answers and who handles it."""

from __future__ import annotations

from typing import Any

from tornado.routing import Rule
from tornado.web import url

from server.handlers.account_pages import account_page_routes
from server.handlers.admin_api import admin_api_routes
from server.handlers.admin_pages import admin_page_routes
from server.handlers.audit import AuditHandler, AuditPageHandler
from server.handlers.cookies import CookiePageHandler
from server.handlers.docs import DocsPageHandler, OpenApiHandler
from server.handlers.downloads import (
    DownloadFileHandler,
    DownloadHandler,
    DownloadsHandler,
    DownloadsPageHandler,
    SeedDownloadHandler,
)
from server.handlers.echo import EchoHandler
from server.handlers.health import HealthHandler, MetricsHandler, ReadyHandler
from server.handlers.language import LanguageHandler
from server.handlers.orders import (
    OrderActionHandler,
    OrderLookupPageHandler,
    OrdersApiHandler,
    OrdersPageHandler,
)
from server.handlers.pages import IndexPageHandler
from server.handlers.recovery import recovery_routes
from server.handlers.redirect import RedirectHandler
from server.handlers.session import LoginPageHandler, LogoutHandler
from server.handlers.user import (
    AccountHandler,
    LoginHandler,
    MeHandler,
    PasswordHandler,
    SessionHandler,
    SessionsHandler,
    UserHandler,
)
from server.openapi import build_openapi
from server.permissions import (
    AUDIT_VIEW,
    DOWNLOADS_USE,
    LOGIN,
    ORDERS_LOOKUP,
    ORDERS_USE,
    PUBLIC,
    requires,
    route,
)
from server.realtime.protocol import realtime_protocols
from server.realtime.routes import realtime_routes
from server.services import Services

API_VERSION = "0.1.0"
REALTIME_NOTE = (
    "The chat WebSocket `/message` (its frames, close codes and limits) and the TCP chat (its"
    " commands and lines) are described under `info.x-realtime`, and on `/docs`."
)


def build_routes(services: Services) -> list[Rule]:
    """The application's routes; every handler receives ``services`` and what the route needs
    (``need``: ``PUBLIC``, ``LOGIN`` or a permission, see ``server.permissions``) through
    ``initialize``."""
    deps: dict[str, Any] = {"services": services}
    rules = [
        # Pages
        route(r"/", IndexPageHandler, deps, name="index", need=PUBLIC),
        route(r"/login", LoginPageHandler, deps, name="login", need=PUBLIC),
        route(r"/logout", LogoutHandler, deps, name="logout", need=PUBLIC),
        route(r"/language", LanguageHandler, deps, name="language", need=PUBLIC),
        # The /user resource (seed §4): log in (GET, the seed's way) and register (POST) are
        # open; changing the profile (PUT) and logging out (DELETE) need a login
        route(
            r"/user", UserHandler, deps, name="user", need=requires(PUBLIC, PUT=LOGIN, DELETE=LOGIN)
        ),
        route(r"/user/login", LoginHandler, deps, name="user-login", need=PUBLIC),
        route(r"/user/me", MeHandler, deps, name="user-me", need=LOGIN),
        route(r"/user/password", PasswordHandler, deps, name="user-password", need=LOGIN),
        route(r"/user/account", AccountHandler, deps, name="user-account", need=LOGIN),
        route(r"/user/sessions", SessionsHandler, deps, name="user-sessions", need=LOGIN),
        route(
            r"/user/sessions/(?P<session_id>[0-9]{1,18})",
            SessionHandler,
            deps,
            name="user-session",
            need=LOGIN,
        ),
        *recovery_routes(deps),  # email verification and password reset (JSON)
        *account_page_routes(deps),  # /signup, /account, /forgot, /reset/{token}, /verify/{token}
        # Menus, roles, users, permissions: the JSON API and the admin pages
        *admin_api_routes(deps),
        *admin_page_routes(deps),
        # The audit log
        route(r"/api/audit", AuditHandler, deps, name="api-audit", need=AUDIT_VIEW),
        route(r"/admin/audit", AuditPageHandler, deps, name="admin-audit", need=AUDIT_VIEW),
        # Seed demos: request inspection, cookies, redirects, orders
        route(r"/echo", EchoHandler, deps, name="echo", need=PUBLIC),
        route(r"/cookie", CookiePageHandler, deps, name="cookie", need=PUBLIC),
        route(r"/redirect", RedirectHandler, deps, name="redirect", need=PUBLIC),
        route(r"/api/orders", OrdersApiHandler, deps, name="api-orders", need=ORDERS_USE),
        route(r"/orders", OrdersPageHandler, deps, name="orders", need=ORDERS_USE),
        route(
            r"/admin/orders",
            OrderLookupPageHandler,
            deps,
            name="admin-orders",
            need=ORDERS_LOOKUP,
        ),
        route(
            r"/order/(?P<action_code>\d+)/(?P<order_id>\d+)",
            OrderActionHandler,
            deps,
            name="order-action",
            need=ORDERS_USE,
        ),
        # Downloads (seed §8); the saved files are served by file_routes() below
        route(r"/api/downloads", DownloadsHandler, deps, name="api-downloads", need=DOWNLOADS_USE),
        route(
            r"/api/downloads/(?P<download_id>[0-9a-f]{32})",
            DownloadHandler,
            deps,
            name="api-download",
            need=DOWNLOADS_USE,
        ),
        route(r"/download", SeedDownloadHandler, deps, name="download", need=DOWNLOADS_USE),
        route(r"/downloads", DownloadsPageHandler, deps, name="downloads", need=DOWNLOADS_USE),
        # Realtime: chat pages and sockets, the ticker
        *realtime_routes(deps),
        # Operations (/metrics has its own address allow-list)
        route(r"/healthz", HealthHandler, deps, name="healthz", need=PUBLIC),
        route(r"/readyz", ReadyHandler, deps, name="readyz", need=PUBLIC),
        route(r"/metrics", MetricsHandler, deps, name="metrics", need=PUBLIC),
    ]
    document = build_openapi(
        rules,
        title="mservices",
        version=API_VERSION,
        description=REALTIME_NOTE,
        extensions={"x-realtime": realtime_protocols()},
    )
    described = {**deps, "document": document}
    return [
        *rules,
        route(r"/openapi\.json", OpenApiHandler, described, name="openapi", need=PUBLIC),
        route(r"/docs", DocsPageHandler, described, name="docs", need=PUBLIC),
    ]


def file_routes(services: Services) -> list[Rule]:
    """Saved downloads under ``/s/downloads/``. Tornado puts the ``static_path`` route ``/s/(.*)``
    in front of every other rule, so ``make_app`` registers these with ``add_handlers``, whose
    rules are matched before it."""
    directory = str(services.settings.effective_download_dir)
    return [
        url(r"/s/downloads/(.+)", DownloadFileHandler, {"path": directory}, name="download-file"),
    ]

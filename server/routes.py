"""The route table, readable top to bottom: every URL mservices answers and who handles it."""

from __future__ import annotations

from typing import Any

from tornado.routing import Rule
from tornado.web import url

from server.handlers.admin_api import admin_api_routes
from server.handlers.admin_pages import admin_page_routes
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
from server.handlers.orders import (
    OrderActionHandler,
    OrderLookupPageHandler,
    OrdersApiHandler,
    OrdersPageHandler,
)
from server.handlers.pages import IndexPageHandler
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
from server.realtime.routes import realtime_routes
from server.services import Services

API_VERSION = "0.1.0"


def build_routes(services: Services) -> list[Rule]:
    """The application's routes; every handler receives ``services`` through ``initialize``."""
    deps: dict[str, Any] = {"services": services}
    rules = [
        # Pages
        url(r"/", IndexPageHandler, deps, name="index"),
        url(r"/login", LoginPageHandler, deps, name="login"),
        url(r"/logout", LogoutHandler, deps, name="logout"),
        # The /user resource (seed §4)
        url(r"/user", UserHandler, deps, name="user"),
        url(r"/user/login", LoginHandler, deps, name="user-login"),
        url(r"/user/me", MeHandler, deps, name="user-me"),
        url(r"/user/password", PasswordHandler, deps, name="user-password"),
        url(r"/user/account", AccountHandler, deps, name="user-account"),
        url(r"/user/sessions", SessionsHandler, deps, name="user-sessions"),
        url(
            r"/user/sessions/(?P<session_id>[0-9]{1,18})", SessionHandler, deps, name="user-session"
        ),
        # Menus and RBAC: the JSON API and the admin pages
        *admin_api_routes(deps),
        *admin_page_routes(deps),
        # Seed demos: request inspection, cookies, redirects, orders
        url(r"/echo", EchoHandler, deps, name="echo"),
        url(r"/cookie", CookiePageHandler, deps, name="cookie"),
        url(r"/redirect", RedirectHandler, deps, name="redirect"),
        url(r"/api/orders", OrdersApiHandler, deps, name="api-orders"),
        url(r"/orders", OrdersPageHandler, deps, name="orders"),
        url(r"/admin/orders", OrderLookupPageHandler, deps, name="admin-orders"),
        url(
            r"/order/(?P<action_code>\d+)/(?P<order_id>\d+)",
            OrderActionHandler,
            deps,
            name="order-action",
        ),
        # Downloads (seed §8); the saved files are served by file_routes() below
        url(r"/api/downloads", DownloadsHandler, deps, name="api-downloads"),
        url(
            r"/api/downloads/(?P<download_id>[0-9a-f]{32})",
            DownloadHandler,
            deps,
            name="api-download",
        ),
        url(r"/download", SeedDownloadHandler, deps, name="download"),
        url(r"/downloads", DownloadsPageHandler, deps, name="downloads"),
        # Realtime: chat pages and sockets, the ticker
        *realtime_routes(deps),
        # Operations
        url(r"/healthz", HealthHandler, deps, name="healthz"),
        url(r"/readyz", ReadyHandler, deps, name="readyz"),
        url(r"/metrics", MetricsHandler, deps, name="metrics"),
    ]
    document = build_openapi(rules, title="mservices", version=API_VERSION)
    described = {**deps, "document": document}
    return [
        *rules,
        url(r"/openapi\.json", OpenApiHandler, described, name="openapi"),
        url(r"/docs", DocsPageHandler, described, name="docs"),
    ]


def file_routes(services: Services) -> list[Rule]:
    """Saved downloads under ``/s/downloads/``. Tornado puts the ``static_path`` route ``/s/(.*)``
    in front of every other rule, so ``make_app`` registers these with ``add_handlers``, whose
    rules are matched before it."""
    directory = str(services.settings.effective_download_dir)
    return [
        url(r"/s/downloads/(.+)", DownloadFileHandler, {"path": directory}, name="download-file"),
    ]

"""The application factory: ``make_app(settings, services)``, the seam of every test and server."""

from __future__ import annotations

import logging

from tornado.web import Application, RequestHandler

from server.handlers.errors import NotFoundHandler
from server.i18n import load_catalogs
from server.logs import REQUEST_FIELD
from server.permissions import PUBLIC, requires
from server.realtime.websocket import MAX_FRAME_BYTES, PING_INTERVAL, open_sockets
from server.resources import STATIC_DIR, TEMPLATE_DIR
from server.routes import build_routes, file_routes
from server.services import Services
from server.settings import Settings
from server.ui_modules import UI_MODULES

access_log = logging.getLogger("mservices.access")


def make_app(settings: Settings, services: Services) -> Application:
    """Build the Tornado application (seed §5 settings) around already-opened ``services``."""
    load_catalogs()
    services.metrics.count_websockets(lambda: len(open_sockets(services)))
    services.metrics.count_chat_frames(lambda: services.hub.delivered)
    services.metrics.count_chat_messages(lambda: services.hub.said)
    services.metrics.count_downloads(lambda: services.downloads.ended)
    services.metrics.count_active_downloads(lambda: services.downloads.running)
    app = Application(
        build_routes(services),
        default_host=settings.host,
        debug=settings.debug,
        template_path=str(TEMPLATE_DIR),
        static_path=str(STATIC_DIR),
        static_url_prefix="/s/",
        ui_modules=UI_MODULES,
        cookie_secret=services.cookie_secret,
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": False, "samesite": "Lax"},
        login_url="/login",
        default_handler_class=NotFoundHandler,
        default_handler_args={"services": services, "need": requires(PUBLIC)},
        log_function=services.metrics.observing(log_request),
        websocket_max_message_size=MAX_FRAME_BYTES,
        websocket_ping_interval=PING_INTERVAL,
        compress_response=False,
    )
    # Matched before the /s/(.*) rule that static_path puts in front of the route table.
    app.add_handlers(r".*$", file_routes(services))
    return app


def log_request(handler: RequestHandler) -> None:
    """One access-log line per request: status, method, path, duration and request id."""
    status = handler.get_status()
    request = handler.request
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(
        level,
        "%d %s %s %.1fms rid=%s ip=%s",
        status,
        request.method,
        request.uri,
        1000.0 * request.request_time(),
        getattr(handler, "request_id", "-"),
        request.remote_ip,
        extra={
            REQUEST_FIELD: {
                "status": status,
                "method": request.method,
                "path": request.uri,
                "duration_ms": round(1000.0 * request.request_time(), 1),
                "request_id": getattr(handler, "request_id", None),
                "remote_ip": request.remote_ip,
            }
        },
    )

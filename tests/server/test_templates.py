"""One test renders every template, so a broken template fails here rather than in production."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.web import Application

from repositories.menus import MenuNode
from repositories.models import User
from schemas.audit import AuditEntryRead
from schemas.orders import OrderRead
from schemas.support import LastMessage, ThreadRead
from server.app import STATIC_DIR, TEMPLATE_DIR
from server.handlers.account_pages import SessionRow
from server.handlers.admin_pages import MENU_AUDIENCES, MenuForm, MenuOption, RoleRow, UserRow
from server.handlers.base import PageHandler
from server.handlers.cookies import CookieRow
from server.handlers.docs import SchemaTables, docs_namespace
from server.handlers.orders import REVIEW
from server.permissions import PERMISSIONS, PUBLIC, requires
from server.principal import Principal
from server.realtime.protocol import realtime_protocols
from server.ui_modules import UI_MODULES

TREE = [
    MenuNode(
        id=1,
        title="根 <i>",
        url="/root",
        note=None,
        parent_id=None,
        sort=0,
        visible=True,
        children=[
            MenuNode(
                id=2,
                title="子",
                url=None,
                note=None,
                parent_id=1,
                sort=0,
                visible=True,
                audience="visitors",
            )
        ],
    )
]

OPTIONS = [
    MenuOption(id=1, title="根 <i>", depth=0),
    MenuOption(id=2, title="子 <i>", depth=1, ancestors=frozenset({1})),
]

ROLES = [RoleRow(id=1, name="<i>", description="<i>", menu_ids=frozenset({1}))]

ORDER = OrderRead(
    id=1,
    goods_id=1,
    goods_name="<i>",
    price=Decimal("1.00"),
    status="placed",
    review="<i>",
    created_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
)

THREAD = ThreadRead(
    id=7,
    room="support-7",
    customer="<i>",
    status="closed",
    version=3,
    created_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    updated_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    closed_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    last_message=LastMessage(user="<i>", text="<i>", ts=1.0, staff=True),
)
STATUSES = {"new": "<i>", "waiting": "<i>", "answered": "<i>", "closed": "<i>"}

PRINCIPAL = Principal(user_id=1, name="<i>", is_superuser=False, role_ids=frozenset())

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "mservices", "version": "0", "description": "<i>"},
    "paths": {
        "/user/{id}": {
            "get": {
                "summary": "<i>",
                "operationId": "get_user_id",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {
                        "name": "<i>",
                        "in": "query",
                        "schema": {"maxLength": 1},
                        "description": "<i>",
                    },
                ],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Read"}}
                    }
                },
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": {"$ref": "#/x/<i>"}}},
                    }
                },
            }
        }
    },
    "components": {
        "schemas": {
            "Read": {
                "title": "<i>",
                "description": "<i>",
                "properties": {"<i>": {"type": "string", "pattern": "<i>", "description": "<i>"}},
            }
        }
    },
}
DOCUMENT["info"]["x-realtime"] = realtime_protocols()

ACCOUNT_USER = User(
    id=1, name="<i>", mobile="<i>", city="<i>", email="<i>@example.com", email_verified=False
)

NAMESPACES: dict[str, dict[str, Any]] = {
    "account/signup.html": {
        "menus": TREE,
        "error": "<i>",
        "form": {"name": "<i>", "mobile": "<i>", "city": "<i>"},
    },
    "account/account.html": {
        "menus": TREE,
        "user": ACCOUNT_USER,
        "sessions": [
            SessionRow(id=1, device="<i>", created_at="<i>", last_used_at="<i>", current=True)
        ],
    },
    "account/forgot.html": {"menus": TREE, "error": "<i>", "sent": True, "email": "<i>"},
    "account/reset.html": {"menus": TREE, "error": "<i>", "invalid": False},
    "account/verify.html": {"menus": TREE, "invalid": False, "done": "<i>@example.com"},
    "base.html": {"menus": TREE},
    "index.html": {"menus": TREE},
    "login.html": {"menus": TREE, "error": "<i>", "name": "<i>", "next_url": "/<i>"},
    "errors/error.html": {
        "menus": TREE,
        "status": 403,
        "heading": "<i>",
        "message": "not <found>",
        "request_id": "r",
    },
    "ui/nav.html": {"menus": TREE},
    "ui/menu.html": {"menus": TREE},
    "docs.html": {"menus": TREE, **docs_namespace(DOCUMENT)},
    "ui/docs_schema.html": {"schemas": SchemaTables(DOCUMENT), "schema": {"$ref": "#/x/<i>"}},
    "ui/docs_frame.html": {
        "frame": {"type": "<i>", "description": "<i>", "fields": [], "example": "<i>"},
        "pretty": json.dumps,
    },
    "chat/room.html": {"menus": TREE, "room": "<i>", "me": "<i>", "title": "<i>"},
    "chat/ticker.html": {"menus": TREE},
    "chat/support_thread.html": {
        "menus": TREE,
        "title": "<i>",
        "thread": THREAD,
        "status": "<i>",
        "statuses": STATUSES,
        "agent": True,
        "me": "<i>",
        "earlier": [THREAD],
        "max_chars": 2000,
    },
    "chat/support_queue.html": {
        "menus": TREE,
        "title": "<i>",
        "threads": [THREAD],
        "count": 1,
        "room": "support-queue",
        "me": "<i>",
        "statuses": STATUSES,
    },
    "cookie.html": {
        "menus": TREE,
        "cookies": [CookieRow(name="<i>", value="<i>", protected=False)],
        "error": "<i>",
        "name": "<i>",
        "value": "<i>",
    },
    "orders.html": {"menus": TREE, "orders": [ORDER], "count": 2},
    "admin/orders.html": {
        "menus": TREE,
        "orders": [(ORDER, "<i>")],
        "count": 2,
        "user_name": "<i>",
    },
    "order.html": {
        "menus": TREE,
        "order": ORDER,
        "action": REVIEW,
        "error": "<i>",
        "review": "<i>",
    },
    "downloads.html": {"menus": TREE},
    "admin/menus.html": {
        "menus": TREE,
        "tree": TREE,
        "options": OPTIONS,
        "permissions": list(PERMISSIONS.values()),
        "audiences": MENU_AUDIENCES,
        "granted_by": {1: ["<i>"]},
        "typed": MenuForm(title="<i>", url="/<i>", note="<i>", parent_id="1", audience="<i>"),
    },
    "admin/menu_node.html": {
        "node": TREE[0],
        "options": OPTIONS,
        "permissions": list(PERMISSIONS.values()),
        "audiences": MENU_AUDIENCES,
        "granted_by": {2: ["<i>"]},
        "typed": MenuForm(title="<i>", url="/<i>", note="<i>", menu_id=2),
        "first": True,
        "last": False,
    },
    "admin/roles.html": {
        "menus": TREE,
        "roles": ROLES,
        "options": OPTIONS,
        "permissions": list(PERMISSIONS.values()),
    },
    "admin/users.html": {
        "menus": TREE,
        "users": [
            UserRow(id=1, name="<i>", is_active=True, is_superuser=False, role_ids=frozenset({1}))
        ],
        "roles": ROLES,
        "q": "<i>",
        "count": 1,
        "page": 2,
        "pages": 3,
        "back": "/admin/users?q=<i>",
        "prev_url": "/admin/users?q=<i>",
        "next_url": "/admin/users?q=<i>&page=3",
    },
    "admin/audit.html": {
        "menus": TREE,
        "typed": {"actor": "<i>", "action": "<i>", "since": "<i>", "until": "", "limit": "5"},
        "errors": [],
        "entries": [
            AuditEntryRead(
                id=1,
                created_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
                action="<i>",
                actor="<i>",
                user_id=None,
                detail="<i>",
                client_ip="<i>",
            )
        ],
        "next_url": "/admin/audit?actor=<i>&before=1",
        "first_url": "/admin/audit?actor=<i>",
    },
}


class _Connection:
    """Just enough of an HTTP connection for a handler that only renders."""

    def set_close_callback(self, callback: object) -> None:
        return None


def all_templates() -> list[str]:
    return sorted(
        str(path.relative_to(TEMPLATE_DIR)) for path in Path(TEMPLATE_DIR).rglob("*.html")
    )


def test_every_template_has_a_sample_namespace() -> None:
    assert set(all_templates()) == set(NAMESPACES)


@pytest.mark.parametrize("language", ["zh-CN", "en-US"])
@pytest.mark.parametrize("template", all_templates())
def test_template_renders(template: str, language: str) -> None:
    app = Application(
        template_path=str(TEMPLATE_DIR),
        static_path=str(STATIC_DIR),
        static_url_prefix="/s/",
        ui_modules=UI_MODULES,
        cookie_secret="x" * 32,
    )
    request = HTTPServerRequest(
        start_line=RequestStartLine("GET", "/", "HTTP/1.1"),
        headers=HTTPHeaders({"Host": "localhost", "Accept-Language": language}),
        connection=_Connection(),  # type: ignore[arg-type]
    )
    # A page handler's own template namespace (_, text, menu_title, the language); rendering
    # touches no service.
    handler = PageHandler(app, request, services=None, need=requires(PUBLIC))
    namespace = {"principal": PRINCIPAL, "flash": {"level": "success", "text": "<i>"}}
    namespace.update(NAMESPACES[template])
    html = handler.render_string(template, **namespace).decode()
    assert html.strip()
    assert "<i>" not in html and "<found>" not in html
    if template.startswith(("ui/", "admin/menu_node")):
        return  # fragments carry no <html>
    assert f'<html lang="{language}">' in html

"""Permissions: the registry of named codes, and what each route, socket and command needs.

A permission is a stable code (``users.assign``) that roles grant; nothing is decided by a
menu's url, which a menu admin can edit. Every route declares its ``Requirement`` once, in the
route table (``route(..., need=...)``); ``BaseHandler.prepare`` enforces it and the OpenAPI
document reads it from the same place. ``PUBLIC`` lets anyone in, ``LOGIN`` any logged-in user,
any other value is a permission code from ``PERMISSIONS``. A superuser holds every permission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from tornado.routing import Rule
from tornado.web import RequestHandler, url

from schemas.text import Text


@dataclass(frozen=True, slots=True)
class Permission:
    """A named right a role can grant, with what it allows as a one-line ``Text`` (shown in
    the reader's language; ``str(meaning)`` is the English)."""

    code: str
    meaning: Text


MENUS_VIEW: Final = "menus.view"
MENUS_CHANGE: Final = "menus.change"
ROLES_VIEW: Final = "roles.view"
ROLES_CHANGE: Final = "roles.change"
USERS_VIEW: Final = "users.view"
USERS_CHANGE: Final = "users.change"
USERS_ASSIGN: Final = "users.assign"
SESSIONS_REVOKE: Final = "sessions.revoke"
AUDIT_VIEW: Final = "audit.view"
ORDERS_USE: Final = "orders.use"
ORDERS_LOOKUP: Final = "orders.lookup"
DOWNLOADS_USE: Final = "downloads.use"
CHAT_USE: Final = "chat.use"
SUPPORT_ANSWER: Final = "support.answer"

PERMISSIONS: Final[Mapping[str, Permission]] = MappingProxyType(
    {
        permission.code: permission
        for permission in (
            Permission(MENUS_VIEW, Text("see every menu in the menu editor")),
            Permission(MENUS_CHANGE, Text("create, edit, move and delete menus")),
            Permission(ROLES_VIEW, Text("see roles and what they grant")),
            Permission(
                ROLES_CHANGE, Text("create, edit and delete roles, and grant them what you hold")
            ),
            Permission(USERS_VIEW, Text("see users, their status and roles")),
            Permission(USERS_CHANGE, Text("activate and deactivate users (not superusers)")),
            Permission(USERS_ASSIGN, Text("give users roles whose grants you hold yourself")),
            Permission(SESSIONS_REVOKE, Text("end another user's sessions")),
            Permission(AUDIT_VIEW, Text("read the audit log")),
            Permission(ORDERS_USE, Text("see and act on your own orders")),
            Permission(ORDERS_LOOKUP, Text("look up every user's orders")),
            Permission(
                DOWNLOADS_USE, Text("have the server download files for you, within the quotas")
            ),
            Permission(CHAT_USE, Text("chat over the WebSocket and the TCP door")),
            Permission(
                SUPPORT_ANSWER,
                Text("read and answer every customer's support conversation, and close them"),
            ),
        )
    }
)
"""Every permission mservices knows, by code, in the order the admin pages list them."""

ADMIN_PERMISSIONS: Final = frozenset(
    {
        MENUS_VIEW,
        MENUS_CHANGE,
        ROLES_VIEW,
        ROLES_CHANGE,
        USERS_VIEW,
        USERS_CHANGE,
        USERS_ASSIGN,
        SESSIONS_REVOKE,
        AUDIT_VIEW,
    }
)
"""The administration permissions: no change may take one of them from the actor making it."""

PUBLIC: Final = "public"
"""A requirement met by everyone, visitors included."""

LOGIN: Final = "login"
"""A requirement met by any logged-in user, whatever their roles."""


def is_permission(code: str) -> bool:
    """True when ``code`` names a registered permission."""
    return code in PERMISSIONS


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a route needs: one ``default`` for every method, or a different one per method."""

    default: str
    by_method: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for need in (self.default, *self.by_method.values()):
            if need not in (PUBLIC, LOGIN) and not is_permission(need):
                raise ValueError(f"unknown permission {need!r}")

    def for_method(self, method: str) -> str:
        """The need of ``method`` (``GET``, ``POST``...)."""
        return self.by_method.get(method, self.default)

    def needs(self) -> set[str]:
        """Every need this requirement names."""
        return {self.default, *self.by_method.values()}


def requires(default: str, **by_method: str) -> Requirement:
    """``requires(USERS_VIEW, PATCH=USERS_CHANGE)``: what a route needs, per method."""
    return Requirement(default, MappingProxyType(dict(by_method)))


def route(
    pattern: str,
    handler: type[RequestHandler],
    deps: Mapping[str, Any],
    *,
    name: str,
    need: str | Requirement,
    **kwargs: Any,
) -> Rule:
    """A route of the table with what it needs: the handler receives it as ``need``."""
    requirement = need if isinstance(need, Requirement) else requires(need)
    return url(pattern, handler, {**deps, **kwargs, "need": requirement}, name=name)


def rule_requirement(rule: Rule) -> Requirement | None:
    """The requirement ``route`` attached to ``rule``, or None for a rule made otherwise."""
    need = (rule.target_kwargs or {}).get("need")
    return need if isinstance(need, Requirement) else None

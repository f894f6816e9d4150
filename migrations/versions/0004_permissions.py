"""Permissions by code, the named locks of admin writes, indexes for reading the audit log.

What each role grants besides menus (``role_permission``), the permission a menu's page needs
(``menu.permission``), the lock rows that serialize admin writes (``app_lock``).

Existing installs keep every right they had: a role that granted an admin menu (the url was the
permission until now) gets the matching permissions, a role that granted the downloads menu
gets ``downloads.use``, and every role but ``anonymous`` keeps what any logged-in user could do
before (``chat.use``, ``orders.use``). Superusers stay superusers and hold everything.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_engine": "InnoDB",
}

URL_PERMISSIONS = {
    "/admin/menus": ("menus.view", "menus.change"),
    "/admin/roles": ("roles.view", "roles.change"),
    "/admin/users": ("users.view", "users.change", "users.assign", "sessions.revoke"),
    "/admin/orders": ("orders.lookup",),
    "/downloads": ("downloads.use",),
    "/chat": ("chat.use",),
    "/robbit": ("chat.use",),
    "/orders": ("orders.use",),
}
"""What granting a menu with this url allowed before this revision."""

MENU_PERMISSION = {
    "/admin/menus": "menus.view",
    "/admin/roles": "roles.view",
    "/admin/users": "users.view",
    "/admin/orders": "orders.lookup",
    "/admin/audit": "audit.view",
    "/downloads": "downloads.use",
    "/chat": "chat.use",
    "/robbit": "chat.use",
    "/orders": "orders.use",
}
"""The permission the page behind each known url needs: its menu is shown only to holders."""

LOGGED_IN = ("chat.use", "orders.use")
"""What every logged-in user could do before this revision."""

ADMIN_URLS = {"/admin/menus", "/admin/roles", "/admin/users"}


def upgrade() -> None:
    """Create ``role_permission`` and ``app_lock``, add ``menu.permission``, carry rights over."""
    op.create_table(
        "role_permission",
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["role.id"],
            name=op.f("fk_role_permission_role_id_role"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_id", "permission", name=op.f("pk_role_permission")),
        **MYSQL,
    )
    app_lock = op.create_table(
        "app_lock",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_app_lock")),
        **MYSQL,
    )
    op.bulk_insert(app_lock, [{"name": "admin", "generation": 0}])
    with op.batch_alter_table("menu") as batch:
        batch.add_column(sa.Column("permission", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_log_actor_id", "audit_log", ["actor", "id"], unique=False)
    op.create_index("ix_audit_log_action_id", "audit_log", ["action", "id"], unique=False)
    _carry_rights_over()


def _carry_rights_over() -> None:
    connection = op.get_bind()
    menu = sa.table("menu", sa.column("id", sa.Integer), sa.column("url"), sa.column("permission"))
    role = sa.table("role", sa.column("id", sa.Integer), sa.column("name"))
    role_menu = sa.table("role_menu", sa.column("role_id"), sa.column("menu_id"))
    role_permission = sa.table("role_permission", sa.column("role_id"), sa.column("permission"))
    for url, permission in MENU_PERMISSION.items():
        connection.execute(sa.update(menu).where(menu.c.url == url).values(permission=permission))
    granted: dict[int, set[str]] = {}
    rows = connection.execute(
        sa.select(role_menu.c.role_id, menu.c.url).join(menu, menu.c.id == role_menu.c.menu_id)
    )
    urls_by_role: dict[int, set[str]] = {}
    for role_id, url in rows:
        urls_by_role.setdefault(role_id, set()).add(url)
        granted.setdefault(role_id, set()).update(URL_PERMISSIONS.get(url, ()))
    for role_id, name in connection.execute(sa.select(role.c.id, role.c.name)):
        if name == "anonymous":
            granted.pop(role_id, None)
            continue
        granted.setdefault(role_id, set()).update(LOGGED_IN)
        if urls_by_role.get(role_id, set()) >= ADMIN_URLS:
            granted[role_id].add("audit.view")
    values = [
        {"role_id": role_id, "permission": permission}
        for role_id, permissions in sorted(granted.items())
        for permission in sorted(permissions)
    ]
    if values:
        connection.execute(sa.insert(role_permission), values)


def downgrade() -> None:
    """Drop what ``upgrade`` added (menu urls are the permissions again)."""
    op.drop_index("ix_audit_log_action_id", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_id", table_name="audit_log")
    with op.batch_alter_table("menu") as batch:
        batch.drop_column("permission")
    op.drop_table("app_lock")
    op.drop_table("role_permission")

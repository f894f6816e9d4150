"""Languages: ``user.language`` (the account's choice), and message ids for built-in titles.

``menu.title_key`` and ``role.description_key`` hold the English message id of a built-in
menu's title or demo role's description, so pages show them in the reader's language; rows an
admin created or has since renamed keep None and are shown as typed. Existing demo rows are
recognised by their unchanged Chinese title (and url) or description.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEMO_MENU_KEYS = (
    # (title as loaded by the demo, url, message id)
    ("首页", "/", "Home"),
    ("登录", "/login", "Log in"),
    ("我的订单", "/orders", "My orders"),
    ("客服中心", None, "Support"),
    ("聊天室", "/chat", "Chat room"),
    ("客服在线", "/robbit", "Live support"),
    ("订单查询", "/admin/orders", "Order lookup"),
    ("下载", "/downloads", "Downloads"),
    ("系统管理", None, "Administration"),
    ("菜单管理", "/admin/menus", "Menus"),
    ("角色管理", "/admin/roles", "Roles"),
    ("用户管理", "/admin/users", "Users"),
    ("审计日志", "/admin/audit", "Audit log"),
)
DEMO_ROLE_KEYS = (
    ("访客（未登录）看到的菜单", "Menus visitors see before logging in"),
    ("管理员：菜单、角色、用户、审计日志", "Admin: menus, roles, users, audit log"),
    ("客服：与顾客聊天、查询订单", "Support agent: chats with customers, looks up orders"),
    ("顾客：自己的订单和客服聊天", "Customer: their own orders and support chat"),
)


def upgrade() -> None:
    """Add the three columns and mark the demo's own rows."""
    with op.batch_alter_table("user") as batch:
        batch.add_column(sa.Column("language", sa.String(length=16), nullable=True))
    with op.batch_alter_table("menu") as batch:
        batch.add_column(sa.Column("title_key", sa.String(length=64), nullable=True))
    with op.batch_alter_table("role") as batch:
        batch.add_column(sa.Column("description_key", sa.String(length=255), nullable=True))
    menu = sa.table(
        "menu",
        sa.column("title", sa.String),
        sa.column("url", sa.String),
        sa.column("title_key", sa.String),
    )
    for title, url, key in DEMO_MENU_KEYS:
        same_url = menu.c.url.is_(None) if url is None else menu.c.url == url
        op.execute(menu.update().where(menu.c.title == title, same_url).values(title_key=key))
    role = sa.table(
        "role", sa.column("description", sa.String), sa.column("description_key", sa.String)
    )
    for description, key in DEMO_ROLE_KEYS:
        op.execute(
            role.update().where(role.c.description == description).values(description_key=key)
        )


def downgrade() -> None:
    """Drop the three columns."""
    with op.batch_alter_table("role") as batch:
        batch.drop_column("description_key")
    with op.batch_alter_table("menu") as batch:
        batch.drop_column("title_key")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("language")

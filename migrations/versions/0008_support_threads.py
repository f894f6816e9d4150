"""Private support conversations, the staff badge on chat messages, who may answer them.

``support_thread`` is a customer's private conversation (the room ``support-<id>``), its status
and a change counter; ``chat_message.staff`` marks what support staff said there.

Rooms whose name starts with ``support-`` (in any case) are private from now on. Messages an
install already holds in such a room were said in public before this revision; they are moved
to ``old-<room>`` so that no private conversation can show them (a thread's room could otherwise
inherit what anyone posted under its name).

Who may answer (``support.answer``): every role that grants the ``/robbit`` menu (客服在线)
*and* holds ``orders.lookup``, i.e. the staff who serve customers there and are already trusted
with every customer's orders; the demo's ``agent`` role is one. Customers (``/robbit`` without
``orders.lookup``) and order clerks (``orders.lookup`` without ``/robbit``) get nothing, so no
private conversation becomes readable by someone who could not see as much before. Superusers
hold it as they hold everything.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_engine": "InnoDB",
}
SUPPORT_ANSWER = "support.answer"
SUPPORT_URL = "/robbit"
STAFF_PERMISSION = "orders.lookup"
PRIVATE_PREFIX = "support-"
MOVED_PREFIX = "old-"
ROOM_CHARS = 64


def upgrade() -> None:
    """Create ``support_thread``, add ``chat_message.staff``, move public ``support-*`` history
    aside and grant ``support.answer`` to the support staff's roles."""
    op.create_table(
        "support_thread",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("open_for", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=True),
        sa.Column("answered_by", sa.Integer(), nullable=True),
        sa.Column("closed_by", sa.Integer(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("closed_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["user.id"],
            name=op.f("fk_support_thread_customer_id_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["answered_by"],
            ["user.id"],
            name=op.f("fk_support_thread_answered_by_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["closed_by"],
            ["user.id"],
            name=op.f("fk_support_thread_closed_by_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_thread")),
        sa.UniqueConstraint("open_for", name=op.f("uq_support_thread_open_for")),
        sqlite_autoincrement=True,
        **MYSQL,
    )
    op.create_index(
        op.f("ix_support_thread_customer_id"), "support_thread", ["customer_id"], unique=False
    )
    op.create_index(
        "ix_support_thread_status_updated_at",
        "support_thread",
        ["status", "updated_at"],
        unique=False,
    )
    with op.batch_alter_table("chat_message") as batch:
        batch.add_column(
            sa.Column("staff", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    _move_public_support_rooms()
    _grant_support_answer()


def _move_public_support_rooms() -> None:
    message = sa.table("chat_message", sa.column("room", sa.String))
    moved = sa.literal(MOVED_PREFIX) + sa.func.substr(
        message.c.room, 1, ROOM_CHARS - len(MOVED_PREFIX)
    )
    op.execute(
        message.update()
        .where(sa.func.lower(message.c.room).like(PRIVATE_PREFIX + "%"))
        .values(room=moved)
    )


def _grant_support_answer() -> None:
    connection = op.get_bind()
    menu = sa.table("menu", sa.column("id", sa.Integer), sa.column("url", sa.String))
    role_menu = sa.table("role_menu", sa.column("role_id"), sa.column("menu_id"))
    role_permission = sa.table("role_permission", sa.column("role_id"), sa.column("permission"))
    support_roles = set(
        connection.execute(
            sa.select(role_menu.c.role_id)
            .join(menu, menu.c.id == role_menu.c.menu_id)
            .where(menu.c.url == SUPPORT_URL)
        ).scalars()
    )
    staff_roles = set(
        connection.execute(
            sa.select(role_permission.c.role_id).where(
                role_permission.c.permission == STAFF_PERMISSION
            )
        ).scalars()
    )
    answering = sorted(support_roles & staff_roles)
    if answering:
        connection.execute(
            sa.insert(role_permission),
            [{"role_id": role_id, "permission": SUPPORT_ANSWER} for role_id in answering],
        )


def downgrade() -> None:
    """Drop what ``upgrade`` added (moved history stays under ``old-``)."""
    role_permission = sa.table("role_permission", sa.column("permission", sa.String))
    op.execute(role_permission.delete().where(role_permission.c.permission == SUPPORT_ANSWER))
    with op.batch_alter_table("chat_message") as batch:
        batch.drop_column("staff")
    op.drop_table("support_thread")  # its indexes go with it

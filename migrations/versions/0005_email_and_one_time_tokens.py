"""Email on the user, and one-time link tokens for email verification and password reset.

``user.email`` is optional and unique (stored normalised, see ``schemas.recovery``);
``user.email_verified`` says whether a verification link sent to it was followed.
``one_time_token`` holds only the SHA-256 of each link token, its purpose, expiry and the moment it
was used (single use).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_engine": "InnoDB",
}


def upgrade() -> None:
    """Add ``user.email`` and ``user.email_verified``; create ``one_time_token``."""
    with op.batch_alter_table("user") as batch:
        batch.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch.add_column(
            sa.Column("email_verified", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.create_unique_constraint(op.f("uq_user_email"), ["email"])
    op.create_table(
        "one_time_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_one_time_token_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_one_time_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_one_time_token_token_hash")),
        **MYSQL,
    )
    op.create_index(op.f("ix_one_time_token_user_id"), "one_time_token", ["user_id"], unique=False)


def downgrade() -> None:
    """Drop ``one_time_token`` and the user's email columns."""
    op.drop_table("one_time_token")  # its index goes with it (MariaDB refuses to drop it first)
    with op.batch_alter_table("user") as batch:
        batch.drop_constraint(op.f("uq_user_email"), type_="unique")
        batch.drop_column("email_verified")
        batch.drop_column("email")

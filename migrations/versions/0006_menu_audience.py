"""Who a menu is shown to: ``menu.audience`` is ``all``, ``visitors`` or ``members``.

A menu meant for visitors (登录) is hidden once someone is logged in, superusers included; a menu
meant for members is hidden from visitors even when the ``anonymous`` role grants it. Existing
menus stay ``all``, except the one whose url is ``/login``: nobody logged in has a use for it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOGIN_URL = "/login"


def upgrade() -> None:
    """Add ``menu.audience`` (``all`` by default) and make the login menu visitors-only."""
    with op.batch_alter_table("menu") as batch:
        batch.add_column(
            sa.Column("audience", sa.String(length=16), server_default="all", nullable=False)
        )
    menu = sa.table("menu", sa.column("url", sa.String), sa.column("audience", sa.String))
    op.execute(menu.update().where(menu.c.url == LOGIN_URL).values(audience="visitors"))


def downgrade() -> None:
    """Drop ``menu.audience``."""
    with op.batch_alter_table("menu") as batch:
        batch.drop_column("audience")

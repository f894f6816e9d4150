"""The data model: SQLAlchemy 2 typed models for menus, users, roles and their permissions, tokens,
one-time link tokens, goods, orders, the audit log, chat history, support conversations and the
named locks that serialize admin writes.

Migrations in ``migrations/versions`` create exactly this schema; a test checks that
autogenerate finds no difference between the two.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Binary collation on MariaDB: names compare exactly (case and accents count), as on SQLite,
# so both backends agree on what is unique.
MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as naive UTC (both backends) and always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware value")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    """The declarative base: one metadata with a naming convention so migrations are stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


user_role = Table(
    "user_role",
    Base.metadata,
    Column("user_id", ForeignKey("user.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", ForeignKey("role.id", ondelete="CASCADE"), primary_key=True, index=True),
    **MYSQL_TABLE_ARGS,
)

role_menu = Table(
    "role_menu",
    Base.metadata,
    Column("role_id", ForeignKey("role.id", ondelete="CASCADE"), primary_key=True),
    Column("menu_id", ForeignKey("menu.id", ondelete="CASCADE"), primary_key=True, index=True),
    **MYSQL_TABLE_ARGS,
)


role_permission = Table(
    "role_permission",
    Base.metadata,
    Column("role_id", ForeignKey("role.id", ondelete="CASCADE"), primary_key=True),
    Column("permission", String(64), primary_key=True),
    **MYSQL_TABLE_ARGS,
)
"""The permission codes (``server.permissions``) each role grants."""


class AppLock(Base):
    """A named lock row: a transaction that updates it first holds it until it ends, so writers
    whose checks must see each other's results (the menu tree, the superusers) go one at a time
    on both backends."""

    __tablename__ = "app_lock"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class Menu(Base):
    """A node of the menu tree (seed §7.2): what a role *sees*. ``permission``, when set, is
    the permission its page needs, so nobody is shown a link they would get 403 on."""

    __tablename__ = "menu"
    __table_args__ = (UniqueConstraint("parent_id", "title"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(64))
    title_key: Mapped[str | None] = mapped_column(String(64))
    """A built-in menu's title as a message id (English), shown in the reader's language; None
    for menus an admin created or renamed, whose ``title`` is shown as typed."""
    url: Mapped[str | None] = mapped_column(String(255), unique=True)
    note: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("menu.id", ondelete="RESTRICT"), index=True
    )
    sort: Mapped[int] = mapped_column(Integer, default=0)
    visible: Mapped[bool] = mapped_column(default=True, server_default=true())
    permission: Mapped[str | None] = mapped_column(String(64))
    audience: Mapped[str] = mapped_column(String(16), default="all", server_default="all")
    """Who is shown the menu, among those it is granted to: ``all``, ``visitors`` (only while
    not logged in, e.g. 登录) or ``members`` (only once logged in)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    parent: Mapped[Menu | None] = relationship(
        back_populates="children", remote_side=[id], lazy="raise"
    )
    children: Mapped[list[Menu]] = relationship(back_populates="parent", lazy="raise")


class User(Base):
    """An account; the password is only ever stored as an argon2id hash."""

    __tablename__ = "user"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    mobile: Mapped[str | None] = mapped_column(String(20))
    city: Mapped[str | None] = mapped_column(String(64))
    last_login_device: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    """Normalised (``schemas.recovery.normalise_email``); unique among all accounts."""
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=false())
    language: Mapped[str | None] = mapped_column(String(16))
    """The language the user chose (``zh_CN``, ``en_US``); None follows the browser."""
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    is_superuser: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Role(Base):
    """A named set of menu and permission grants; users hold roles."""

    __tablename__ = "role"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(String(255))
    description_key: Mapped[str | None] = mapped_column(String(255))
    """A built-in role's description as a message id, shown in the reader's language; None once
    an admin writes their own ``description``."""


class AuthToken(Base):
    """A revocable login; only the SHA-256 of the bearer token is stored."""

    __tablename__ = "auth_token"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    device: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OneTimeToken(Base):
    """A single-use, expiring link token (email verification, password reset); only the
    SHA-256 of the token is stored. ``used_at`` is set by the one conditional UPDATE that
    consumes it, so of two concurrent uses exactly one wins."""

    __tablename__ = "one_time_token"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(
        String(254), doc="the address a verification link confirms"
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Goods(Base):
    """Something that can be ordered (seed §2)."""

    __tablename__ = "goods"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    author: Mapped[str | None] = mapped_column(String(64))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Order(Base):
    """A user's order of one goods item (seed §2: cancel, buy again, review)."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_user_id_created_at", "user_id", "created_at"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    goods_id: Mapped[int] = mapped_column(ForeignKey("goods.id", ondelete="RESTRICT"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="placed")
    review: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEntry(Base):
    """One security-relevant event: who did what, when, from where (never a password or token)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_created_at", "created_at"),
        Index("ix_audit_log_actor_id", "actor", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL"), index=True
    )
    actor: Mapped[str | None] = mapped_column(String(32), doc="the name given, even if unknown")
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(255))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ChatMessage(Base):
    """One chat message of a room; ids are assigned by the sender's process (time-ordered)."""

    __tablename__ = "chat_message"
    __table_args__ = (Index("ix_chat_message_room_id", "room", "id"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    room: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    staff: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Said by support staff in a support conversation (shown with a badge)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SupportThread(Base):
    """A customer's private support conversation (客服在线), the chat room ``support-<id>``.

    ``status`` says where it stands: ``new`` (no agent has answered yet), ``waiting`` (the
    customer wrote after an answer), ``answered`` (the newest message is an agent's) or
    ``closed``. ``open_for`` is the customer's id while the thread is open and NULL once it is
    closed, so a unique index keeps one open thread per customer (NULLs never collide).
    ``version`` counts the changes, so readers of live updates keep the newest. Ids are never
    reused (SQLite AUTOINCREMENT; InnoDB keeps its counter), so a new thread can never inherit
    the messages of a deleted one's room.
    """

    __tablename__ = "support_thread"
    __table_args__ = (
        Index("ix_support_thread_status_updated_at", "status", "updated_at"),
        {**MYSQL_TABLE_ARGS, "sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    open_for: Mapped[int | None] = mapped_column(Integer, unique=True)
    status: Mapped[str] = mapped_column(String(16), default="new")
    version: Mapped[int] = mapped_column(Integer, default=0)
    last_message_id: Mapped[int | None] = mapped_column(BigInteger)
    """The newest message by id (messages are stored with the thread's change)."""
    answered_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    closed_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

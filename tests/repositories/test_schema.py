"""Migrations: upgrade, downgrade and back on empty databases, and the models agree with them.

Every test starts from a database with no tables (a new SQLite file, or a scratch MariaDB database
beside the shared test database), never from the shared, already migrated one.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories import schema
from repositories.db import create_engine
from repositories.models import Base, UTCDateTime

MODEL_TABLES = set(Base.metadata.tables)


async def table_names(engine: AsyncEngine) -> set[str]:
    """The tables that exist in the engine's database."""
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


def differences(connection: Connection) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_a_fresh_database_has_no_revision(empty_engine: AsyncEngine) -> None:
    state = await schema.schema_state(empty_engine)

    assert state.current is None
    assert state.head == schema.head_revision()
    assert not state.is_current


async def test_upgrade_creates_every_table_and_reaches_head(empty_engine: AsyncEngine) -> None:
    await schema.upgrade(empty_engine)

    state = await schema.schema_state(empty_engine)
    assert state.is_current
    assert state.current == schema.head_revision()
    assert await table_names(empty_engine) == MODEL_TABLES | {"alembic_version"}


async def test_downgrade_to_base_removes_every_table(empty_engine: AsyncEngine) -> None:
    await schema.upgrade(empty_engine)

    await schema.downgrade(empty_engine, "base")

    assert await table_names(empty_engine) <= {"alembic_version"}
    assert (await schema.schema_state(empty_engine)).current is None


async def test_migrations_survive_a_round_trip(empty_engine: AsyncEngine) -> None:
    await schema.upgrade(empty_engine)
    await schema.downgrade(empty_engine, "base")

    await schema.upgrade(empty_engine)

    assert (await schema.schema_state(empty_engine)).is_current
    assert await table_names(empty_engine) == MODEL_TABLES | {"alembic_version"}
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_upgrading_a_current_database_changes_nothing(empty_engine: AsyncEngine) -> None:
    await schema.upgrade(empty_engine)

    await schema.upgrade(empty_engine)

    assert (await schema.schema_state(empty_engine)).is_current
    assert await table_names(empty_engine) == MODEL_TABLES | {"alembic_version"}


async def test_the_models_agree_with_the_migrations(empty_engine: AsyncEngine) -> None:
    await schema.upgrade(empty_engine)

    async with empty_engine.connect() as connection:
        found = await connection.run_sync(differences)

    assert found == []


async def test_the_comparison_notices_a_schema_that_drifted(empty_engine: AsyncEngine) -> None:
    """Guards the test above: an empty diff must mean agreement, not a blind comparison."""
    await schema.upgrade(empty_engine)
    drop_index = "DROP INDEX ix_menu_parent_id"
    if empty_engine.dialect.name in ("mysql", "mariadb"):
        drop_index += " ON menu"
    async with empty_engine.begin() as connection:
        await connection.execute(text(drop_index))
        await connection.execute(text("ALTER TABLE goods ADD COLUMN stray INTEGER"))

    async with empty_engine.connect() as connection:
        found = await connection.run_sync(differences)

    kinds = sorted(difference[0] for difference in found if isinstance(difference, tuple))
    assert kinds == ["add_index", "remove_column"], found


async def scalar_rows(url: str, sql: str) -> list[Any]:
    """Rows of a query about the MariaDB database at ``url`` (its name is bound as ``:db``)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(sql), {"db": make_url(url).database})
            return [tuple(row) for row in result]
    finally:
        await engine.dispose()


@pytest.mark.mariadb
async def test_mariadb_tables_are_innodb_with_utf8mb4(empty_mariadb_url: str) -> None:
    engine = create_engine(empty_mariadb_url)
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()

    rows = await scalar_rows(
        empty_mariadb_url,
        "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = :db",
    )

    tables = {name: (engine_name, collation) for name, engine_name, collation in rows}
    assert set(tables) == MODEL_TABLES | {"alembic_version"}
    for name in MODEL_TABLES:
        engine_name, collation = tables[name]
        assert engine_name == "InnoDB", name
        assert collation.startswith("utf8mb4_"), (name, collation)


@pytest.mark.mariadb
async def test_mariadb_has_a_real_foreign_key_for_each_one_in_the_models(
    empty_mariadb_url: str,
) -> None:
    engine = create_engine(empty_mariadb_url)
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()

    rows = await scalar_rows(
        empty_mariadb_url,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME, DELETE_RULE "
        "FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = :db",
    )

    expected = {
        (table.name, key.name, key.referred_table.name, (key.ondelete or "RESTRICT").upper())
        for table in Base.metadata.tables.values()
        for key in table.foreign_key_constraints
    }
    assert expected
    assert set(rows) == expected


@pytest.mark.mariadb
async def test_mariadb_keeps_microseconds_in_every_timestamp_column(
    empty_mariadb_url: str,
) -> None:
    engine = create_engine(empty_mariadb_url)
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()

    rows = await scalar_rows(
        empty_mariadb_url,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, DATETIME_PRECISION "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :db AND DATA_TYPE = 'datetime'",
    )

    expected = {
        (table.name, column.name, "datetime", 6)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, UTCDateTime)
    }
    assert expected
    assert set(rows) == expected


async def test_upgrading_to_permissions_keeps_every_right_an_install_had(
    empty_engine: AsyncEngine,
) -> None:
    """0004 turns menu grants into permissions: nobody is locked out, visitors gain nothing."""
    await schema.upgrade(empty_engine, "0003")
    async with empty_engine.begin() as connection:
        for statement in (
            "INSERT INTO menu (id, title, url, sort, visible, created_at) VALUES "
            "(1, 'admin', NULL, 0, 1, '2026-01-01'), "
            "(2, 'menus', '/admin/menus', 0, 1, '2026-01-01'), "
            "(3, 'roles', '/admin/roles', 0, 1, '2026-01-01'), "
            "(4, 'users', '/admin/users', 0, 1, '2026-01-01'), "
            "(5, 'downloads', '/downloads', 0, 1, '2026-01-01'), "
            "(6, 'home', '/', 0, 1, '2026-01-01')",
            "INSERT INTO role (id, name) VALUES (1, 'boss'), (2, 'clerk'), (3, 'anonymous')",
            "INSERT INTO role_menu (role_id, menu_id) VALUES "
            "(1, 1), (1, 2), (1, 3), (1, 4), (2, 4), (2, 5), (3, 6)",
        ):
            await connection.execute(text(statement))

    await schema.upgrade(empty_engine)

    async with empty_engine.connect() as connection:
        rows = await connection.execute(text("SELECT role_id, permission FROM role_permission"))
        granted: dict[int, set[str]] = {}
        for role_id, permission in rows:
            granted.setdefault(role_id, set()).add(permission)
        menus = dict((await connection.execute(text("SELECT url, permission FROM menu"))).all())
        locks = (await connection.execute(text("SELECT name FROM app_lock"))).scalars().all()
    assert granted == {
        1: {
            "menus.view",
            "menus.change",
            "roles.view",
            "roles.change",
            "users.view",
            "users.change",
            "users.assign",
            "sessions.revoke",
            "audit.view",
            "chat.use",
            "orders.use",
        },
        2: {
            "users.view",
            "users.change",
            "users.assign",
            "sessions.revoke",
            "downloads.use",
            "chat.use",
            "orders.use",
        },
    }
    assert menus == {
        None: None,
        "/admin/menus": "menus.view",
        "/admin/roles": "roles.view",
        "/admin/users": "users.view",
        "/downloads": "downloads.use",
        "/": None,
    }
    assert locks == ["admin"]


async def test_upgrading_to_languages_keys_the_demo_rows_an_install_has(
    empty_engine: AsyncEngine,
) -> None:
    """0007 recognises the demo's own menus and role descriptions (unchanged Chinese text and
    url) and gives them message ids; rows an admin made or renamed stay as typed."""
    await schema.upgrade(empty_engine, "0006")
    async with empty_engine.begin() as connection:
        for statement in (
            "INSERT INTO menu (id, title, url, sort, visible, created_at) VALUES "
            "(1, '系统管理', NULL, 0, 1, '2026-01-01'), "
            "(2, '用户管理', '/admin/users', 0, 1, '2026-01-01'), "
            "(3, '用户管理', '/people', 0, 1, '2026-01-01'), "
            "(4, 'Team', '/team', 0, 1, '2026-01-01')",
            "INSERT INTO role (id, name, description) VALUES "
            "(1, 'customer', '顾客：自己的订单和客服聊天'), (2, 'clerk', '店员')",
            "INSERT INTO user (id, name, password_hash, created_at, updated_at) VALUES "
            "(1, 'alice', 'x', '2026-01-01', '2026-01-01')",
        ):
            await connection.execute(text(statement))

    await schema.upgrade(empty_engine)

    async with empty_engine.connect() as connection:
        menus = dict((await connection.execute(text("SELECT id, title_key FROM menu"))).all())
        roles = dict((await connection.execute(text("SELECT id, description_key FROM role"))).all())
        language = await connection.scalar(text("SELECT language FROM user WHERE id = 1"))
    assert menus == {1: "Administration", 2: "Users", 3: None, 4: None}
    assert roles == {1: "Customer: their own orders and support chat", 2: None}
    assert language is None


async def test_upgrading_to_support_threads_grants_support_answer_to_the_staff_only(
    empty_engine: AsyncEngine,
) -> None:
    """0008 grants ``support.answer`` to the roles that grant the ``/robbit`` menu and hold
    ``orders.lookup`` (the support staff), to nobody else, and moves history said in public
    rooms named ``support-...`` (any case) aside, so no private conversation can show it."""
    long_room = "support-" + "x" * 56
    await schema.upgrade(empty_engine, "0007")
    async with empty_engine.begin() as connection:
        for statement in (
            "INSERT INTO menu (id, title, url, sort, visible, created_at) VALUES "
            "(1, '客服在线', '/robbit', 0, 1, '2026-01-01'), "
            "(2, '订单查询', '/admin/orders', 0, 1, '2026-01-01')",
            "INSERT INTO role (id, name) VALUES "
            "(1, 'agent'), (2, 'customer'), (3, 'clerk'), (4, 'helper')",
            "INSERT INTO role_menu (role_id, menu_id) VALUES "
            "(1, 1), (1, 2), (2, 1), (3, 2), (4, 1)",
            "INSERT INTO role_permission (role_id, permission) VALUES "
            "(1, 'chat.use'), (1, 'orders.lookup'), (2, 'chat.use'), (3, 'orders.lookup'), "
            "(4, 'chat.use')",
            "INSERT INTO chat_message (id, room, user_name, text, created_at) VALUES "
            "(1, 'support-1', 'mallory', 'send me your password', '2026-01-01'), "
            "(2, 'Support-Queue', 'mallory', 'hi', '2026-01-01'), "
            "(3, 'lobby', 'ann', 'hello', '2026-01-01'), "
            "(4, 'supporters', 'ann', 'go team', '2026-01-01'), "
            f"(5, '{long_room}', 'ann', 'long', '2026-01-01')",
        ):
            await connection.execute(text(statement))

    await schema.upgrade(empty_engine)

    async with empty_engine.connect() as connection:
        answering = (
            await connection.execute(
                text("SELECT role_id FROM role_permission WHERE permission = 'support.answer'")
            )
        ).scalars()
        rooms = dict((await connection.execute(text("SELECT id, room FROM chat_message"))).all())
        staff = (await connection.execute(text("SELECT staff FROM chat_message"))).scalars()
        assert list(answering) == [1]
        assert not any(staff)
    assert rooms == {
        1: "old-support-1",
        2: "old-Support-Queue",
        3: "lobby",
        4: "supporters",
        5: "old-" + long_room[:60],
    }

    await schema.downgrade(empty_engine, "0007")

    async with empty_engine.connect() as connection:
        left = await connection.scalar(
            text("SELECT COUNT(*) FROM role_permission WHERE permission = 'support.answer'")
        )
    assert left == 0

"""Schema migrations: upgrade, downgrade, the current revision, and whether the schema is at head.

Every function takes an ``AsyncEngine`` and runs Alembic over one of its connections, so the
same code serves the CLI (``mservices db ...``), start-up checks and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from server.resources import MIGRATIONS_DIR


def alembic_config() -> Config:
    """An Alembic configuration that needs no ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found in " + str(MIGRATIONS_DIR))
    return head


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database's schema stands relative to the code."""

    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        """True when the database is at the newest revision."""
        return self.current == self.head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    await _run(engine, lambda config: command.upgrade(config, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table)."""
    await _run(engine, lambda config: command.downgrade(config, revision))


async def schema_state(engine: AsyncEngine) -> SchemaState:
    """The database's current revision and the code's head."""
    async with engine.connect() as connection:
        current = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    return SchemaState(current=current, head=head_revision())


async def _run(engine: AsyncEngine, action: Callable[[Config], None]) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)

    async with engine.begin() as connection:
        await connection.run_sync(run)

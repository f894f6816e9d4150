"""The first (uncached) menu-tree build for a user with five roles, on a 1,000-menu tree.

Not an HTTP measurement: it calls ``build_access`` (the work a cache miss does: the menu query,
the grants query, the O(n) tree build) on a fresh session each time, after one uncounted warm-up
that opens the pooled connection, against a database of its own (a temporary SQLite file; a
scratch MariaDB database beside the bench one, dropped after).
"""

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.seed import seed_menus
from repositories import schema
from repositories.db import create_engine, make_session_factory
from server.logs import quiet_driver_notes
from server.menu_access import build_access
from server.principal import Principal

MENUS = 1000
ROLES = 5
TARGET_MS = 20.0


@dataclass(frozen=True)
class TreeBuildResult:
    """Timings of repeated uncached builds, in milliseconds."""

    target: str
    runs: int
    median_ms: float
    p99_ms: float
    visible_nodes: int


async def measure(url: str, target: str, runs: int) -> TreeBuildResult:
    """Migrate ``url``, seed the tree, then time ``runs`` uncached builds."""
    engine = create_engine(url)
    try:
        await schema.upgrade(engine)
        sessions = make_session_factory(engine)
        async with sessions() as session, session.begin():
            tree = await seed_menus(session, count=MENUS, roles=ROLES, prefix="tree")
        principal = Principal(
            user_id=0, name="bench", is_superuser=False, role_ids=frozenset(tree.role_ids)
        )
        async with sessions() as session:  # warm-up: opens the connection, compiles the queries
            await build_access(session, principal)
        timings = []
        visible = 0
        for _ in range(runs):
            started = time.perf_counter()
            async with sessions() as session:
                access = await build_access(session, principal)
            timings.append((time.perf_counter() - started) * 1000)
            visible = _count(access.tree)
        timings.sort()
        p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
        return TreeBuildResult(target, runs, statistics.median(timings), p99, visible)
    finally:
        await engine.dispose()


def _count(nodes: list) -> int:  # type: ignore[type-arg]
    return sum(1 + _count(node.children) for node in nodes)


async def measure_sqlite(runs: int) -> TreeBuildResult:
    """On a temporary SQLite file."""
    with tempfile.TemporaryDirectory(prefix="mservices-tree-") as scratch:
        return await measure(f"sqlite+aiosqlite:///{Path(scratch) / 'tree.db'}", "sqlite", runs)


async def measure_mariadb(bench_url: str, runs: int) -> TreeBuildResult:
    """On a scratch database beside ``bench_url``'s, dropped afterwards."""
    parsed = make_url(bench_url)
    name = f"{parsed.database}_tree"
    server = create_engine(parsed.set(database="").render_as_string(hide_password=False))
    try:
        async with server.begin() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            await connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            url = parsed.set(database=name).render_as_string(hide_password=False)
            return await measure(url, "mariadb", runs)
        finally:
            async with server.begin() as connection:
                await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await server.dispose()


def run(mysql_url: str | None, runs: int) -> list[TreeBuildResult]:
    """Measure on SQLite, and on MariaDB when its URL is given."""
    quiet_driver_notes()
    results = [asyncio.run(measure_sqlite(runs))]
    if mysql_url:
        results.append(asyncio.run(measure_mariadb(mysql_url, runs)))
    return results


def format_results(results: list[TreeBuildResult]) -> str:
    """A small table of the tree-build timings."""
    lines = [
        f"uncached menu-tree build: {MENUS} menus, user with {ROLES} roles "
        f"(target: under {TARGET_MS:.0f} ms)",
        "target  | runs | median ms | p99 ms | visible nodes",
    ]
    for result in results:
        lines.append(
            f"{result.target:<7} | {result.runs:>4} | {result.median_ms:>9.2f} | "
            f"{result.p99_ms:>6.2f} | {result.visible_nodes}"
        )
    return "\n".join(lines)

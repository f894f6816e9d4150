"""The ``mservices`` command line: serve, db upgrade/downgrade/current, createsuperuser, demo.

Exit codes: 0 done, 1 a runtime failure (database unreachable, schema out of date, bad input),
2 invalid settings or usage. Failures are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories import schema
from repositories.db import make_session_factory, mask_url
from repositories.errors import Conflict, DatabaseUnavailable
from repositories.health import ping
from repositories.users import UserRepository
from server import supervisor
from server.demo import load_demo, remember_credentials
from server.logs import configure_logging
from server.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, PasswordHasher
from server.services import database_engine
from server.settings import Settings, describe_settings_error


class CommandError(Exception):
    """A failure the user can act on; printed as one line, exit code 1."""


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    """A subcommand whose one-line help also heads its own ``--help``."""
    return commands.add_parser(name, help=text, description=text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command, with ``--help`` on each."""
    parser = argparse.ArgumentParser(
        prog="mservices",
        description="mservices: an async-native Tornado service. Settings come from "
        "MSERVICES_* environment variables or .env (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(commands, "serve", "serve HTTP (and the TCP chat) until stopped")
    serve.add_argument("--host", help="address to bind (default: MSERVICES_HOST)")
    serve.add_argument("--port", type=int, help="HTTP port (default: MSERVICES_PORT)")
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="serve with N processes on ports PORT..PORT+N-1 (and TCP_PORT..TCP_PORT+N-1), "
        "supervised by this one, which starts again a process that dies; N > 1 needs MariaDB "
        "and MSERVICES_REDIS_URL (default: 1)",
    )

    db = _command(commands, "db", "database schema migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = _command(db_commands, "upgrade", "apply pending migrations")
    upgrade.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    downgrade = _command(db_commands, "downgrade", "revert migrations")
    downgrade.add_argument("revision", help="target revision, e.g. -1 or base (drops every table)")
    _command(db_commands, "current", "print the database's revision and the code's head")

    superuser = _command(commands, "createsuperuser", "create an administrator account")
    superuser.add_argument("--name", required=True, help="the account name")
    superuser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )

    _command(commands, "demo", "load demo roles, menus, users and goods (idempotent)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "processes", 1) < 1:
        parser.error("argument --processes: must be at least 1")
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"mservices: {describe_settings_error(error)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    try:
        if args.command == "serve":
            from server.runtime import serve

            host = args.host or settings.host
            port = args.port or settings.port
            if args.processes > 1:
                return _serve_processes(settings, host, port, args.processes)
            return asyncio.run(
                _with_reachable_database(
                    settings, lambda engine: serve(settings, engine, host=host, port=port)
                )
            )
        command = COMMANDS[(args.command, getattr(args, "db_command", None))]
        return asyncio.run(
            _with_reachable_database(settings, lambda engine: command(settings, engine, args))
        )
    except CommandError as error:
        print(f"mservices: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve_processes(settings: Settings, host: str, port: int, processes: int) -> int:
    """Check once that several processes can run (exit 2 if the settings forbid it, 1 if the
    database is not ready), then start and supervise them (``server.supervisor``)."""
    try:
        children = supervisor.plan(settings, port=port, processes=processes)
    except supervisor.PlanError as error:
        print(f"mservices: {error}", file=sys.stderr)
        return 2

    async def check_schema(engine: AsyncEngine) -> int:
        await ensure_schema(settings, engine)
        return 0

    asyncio.run(_with_reachable_database(settings, check_schema))
    return supervisor.supervise(host, children)


async def _with_reachable_database(
    settings: Settings, action: Callable[[AsyncEngine], Awaitable[int]]
) -> int:
    """Open the engine (``serve`` serves with it: the pool the settings describe), fail with
    one line if the database does not answer, run, dispose."""
    url = settings.effective_database_url
    if settings.uses_embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = database_engine(settings)
    try:
        try:
            await ping(engine, timeout=settings.db_connect_timeout + 1)
        except DatabaseUnavailable as error:
            raise CommandError(f"cannot reach the database at {mask_url(url)}: {error}") from None
        return await action(engine)
    finally:
        await engine.dispose()


async def ensure_schema(settings: Settings, engine: AsyncEngine) -> None:
    """Upgrade the embedded database; refuse an out-of-date external one with the fix to run."""
    state = await schema.schema_state(engine)
    if state.is_current:
        return
    if settings.uses_embedded_database:
        await schema.upgrade(engine)
        return
    raise CommandError(
        f"the database schema is at {state.current or 'nothing (empty database)'} but this "
        f"version needs {state.head}; run `mservices db upgrade` first"
    )


async def _db_upgrade(settings: Settings, engine: AsyncEngine, args: argparse.Namespace) -> int:
    await schema.upgrade(engine, args.revision)
    state = await schema.schema_state(engine)
    print(f"database at {state.current} (head {state.head})")
    return 0


async def _db_downgrade(settings: Settings, engine: AsyncEngine, args: argparse.Namespace) -> int:
    await schema.downgrade(engine, args.revision)
    state = await schema.schema_state(engine)
    print(f"database at {state.current or 'base (empty)'} (head {state.head})")
    return 0


async def _db_current(settings: Settings, engine: AsyncEngine, args: argparse.Namespace) -> int:
    state = await schema.schema_state(engine)
    verdict = "up to date" if state.is_current else "out of date: run `mservices db upgrade`"
    print(f"current {state.current or 'base (empty)'}, head {state.head}: {verdict}")
    return 0


async def _createsuperuser(
    settings: Settings, engine: AsyncEngine, args: argparse.Namespace
) -> int:
    await ensure_schema(settings, engine)
    password = _read_password(from_stdin=args.password_stdin)
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise CommandError(
            f"the password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    if password == args.name:
        raise CommandError("the password must not be the account name")
    hasher = PasswordHasher()
    try:
        async with make_session_factory(engine)() as session, session.begin():
            try:
                await UserRepository(session).add(
                    name=args.name, password_hash=await hasher.hash(password), is_superuser=True
                )
            except Conflict as error:
                raise CommandError(error.message) from None
    finally:
        hasher.close()
    print(f"superuser {args.name!r} created")
    return 0


async def _demo(settings: Settings, engine: AsyncEngine, args: argparse.Namespace) -> int:
    await ensure_schema(settings, engine)
    hasher = PasswordHasher()
    try:
        async with make_session_factory(engine)() as session, session.begin():
            result = await load_demo(session, hasher)
    finally:
        hasher.close()
    if result.new_credentials:
        print("demo users created (name password):")
        for name, password in result.new_credentials.items():
            print(f"  {name} {password}")
        if settings.uses_embedded_database:
            path = remember_credentials(settings.data_dir, result.new_credentials)
            print(f"(also kept in {path})")
    if result.existing_users:
        hint = (
            f" (passwords in {settings.data_dir / 'demo-credentials.txt'})"
            if settings.uses_embedded_database
            else ""
        )
        print("demo users already present: " + ", ".join(result.existing_users) + hint)
    return 0


def _read_password(*, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to prompt on; pass --password-stdin and pipe the password")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise CommandError("the passwords do not match")
    return first


Command = Callable[[Settings, AsyncEngine, argparse.Namespace], Awaitable[int]]

COMMANDS: dict[tuple[str, str | None], Command] = {
    ("db", "upgrade"): _db_upgrade,
    ("db", "downgrade"): _db_downgrade,
    ("db", "current"): _db_current,
    ("createsuperuser", None): _createsuperuser,
    ("demo", None): _demo,
}

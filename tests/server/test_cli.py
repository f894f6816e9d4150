"""The ``mservices`` command line, run as a real process: help, exit codes, one-line failures,
migrations, serving and stopping, createsuperuser and the demo loader.

Every process gets a minimal environment without the caller's ``MSERVICES_*`` variables and runs
in ``tmp_path``, so neither the checkout's ``.env`` nor its ``data/`` directory is ever touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url

from bench.servers import free_ports
from repositories import schema
from repositories.db import create_engine, make_session_factory
from repositories.models import Base
from repositories.users import UserRepository
from server.security.passwords import PasswordHasher
from tests.conftest import REQUIRE_SERVICES, service_url

RUN_TIMEOUT = 60.0
SERVE_TIMEOUT = 15.0
PROCESSES_TIMEOUT = 60.0
"""How long ``serve --processes`` may take to have every process answering (a loaded machine
starts several interpreters at once)."""
KEPT_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
DEMO_NAMES = ("admin", "agent", "customer")


def mservices_command() -> list[str]:
    """The console script next to the running interpreter, or ``python -m server``."""
    script = Path(sys.executable).parent / "mservices"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "server"]


def clean_env(**variables: str) -> dict[str, str]:
    """A minimal copy of the environment without any ``MSERVICES_*``, plus ``variables``."""
    env = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


def run(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin_text: str | None = None,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``mservices args`` in ``cwd`` and return what it did (stdin is never a terminal)."""
    return subprocess.run(
        [*mservices_command(), *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        input=stdin_text if stdin_text is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def messages(stderr: str) -> list[str]:
    """The stderr lines that are not log records: what the command says to its user."""
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def status_of(url: str) -> int | None:
    """The HTTP status of GET ``url``, or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@contextmanager
def serving(cwd: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``mservices serve args`` in the background; killed afterwards if the test left it
    running."""
    with (
        (cwd / "serve.out").open("wb") as out,
        (cwd / "serve.err").open("wb") as err,
        subprocess.Popen(
            [*mservices_command(), "serve", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        ) as process,
    ):
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=SERVE_TIMEOUT)


def wait_for_status(
    process: subprocess.Popen[bytes], url: str, expected: int, timeout: float = SERVE_TIMEOUT
) -> int | None:
    """Poll ``url`` until it answers ``expected``, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    status: int | None = None
    while time.monotonic() < deadline and process.poll() is None:
        status = status_of(url)
        if status == expected:
            return status
        time.sleep(0.1)
    return status


def stop(process: subprocess.Popen[bytes], timeout: float = SERVE_TIMEOUT) -> int:
    """Send SIGTERM and return the exit code (TimeoutExpired if it does not stop in time)."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def embedded_url(cwd: Path) -> str:
    """The URL of the embedded database a command run in ``cwd`` uses by default."""
    return f"sqlite+aiosqlite:///{(cwd / 'data' / 'mservices.db').resolve()}"


def current_revision(url: str) -> str | None:
    """The schema revision the database at ``url`` is at."""

    async def read() -> str | None:
        engine = create_engine(url)
        try:
            return (await schema.schema_state(engine)).current
        finally:
            await engine.dispose()

    return asyncio.run(read())


def table_names(url: str) -> set[str]:
    """The tables that exist in the database at ``url``."""

    async def read() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def row_counts(url: str) -> dict[str, int]:
    """How many rows each table of the model holds."""

    async def count() -> dict[str, int]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return {
                    table.name: int(
                        (await connection.scalar(select(func.count()).select_from(table))) or 0
                    )
                    for table in Base.metadata.sorted_tables
                }
        finally:
            await engine.dispose()

    return asyncio.run(count())


def stored_user(url: str, name: str) -> tuple[bool, str] | None:
    """``(is_superuser, password_hash)`` of the user called ``name``, or None."""

    async def read() -> tuple[bool, str] | None:
        engine = create_engine(url)
        try:
            async with make_session_factory(engine)() as session:
                user = await UserRepository(session).get_by_name(name)
                return None if user is None else (user.is_superuser, user.password_hash)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def password_matches(password_hash: str, password: str) -> bool:
    """True when ``password`` verifies against the stored argon2 hash."""

    async def verify() -> bool:
        hasher = PasswordHasher(max_workers=1)
        try:
            return await hasher.verify(password_hash, password)
        finally:
            hasher.close()

    return asyncio.run(verify())


async def _execute_on_server(server_url: str, *statements: str) -> None:
    engine = create_engine(server_url, connect_timeout=3)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def scratch_mysql_url() -> Iterator[str]:
    """An empty MariaDB database of its own (the test database's name + ``_cli_<pid>``), dropped
    after.

    Kept apart from the shared migrated test database so these tests can leave it un-migrated;
    the pid keeps two test runs sharing one server from dropping each other's database.
    """
    url = make_url(service_url("MSERVICES_TEST_MYSQL_URL", "MariaDB"))
    name = f"{url.database}_cli_{os.getpid()}"
    server_url = url.set(database="").render_as_string(hide_password=False)
    try:
        asyncio.run(
            _execute_on_server(
                server_url,
                f"DROP DATABASE IF EXISTS `{name}`",
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            )
        )
    except Exception as error:  # reported as the skip reason
        message = f"MariaDB at {url.render_as_string()} does not answer: {error}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_execute_on_server(server_url, f"DROP DATABASE IF EXISTS `{name}`"))


def external_env(database_url: str, **variables: str) -> dict[str, str]:
    """The environment of a process on an external database, with a valid cookie secret."""
    return clean_env(
        MSERVICES_DATABASE_URL=database_url,
        MSERVICES_COOKIE_SECRET=secrets.token_hex(32),
        **variables,
    )


# --- help and usage -----------------------------------------------------------------------------


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "db", "createsuperuser", "demo"):
        assert command in result.stdout
    assert "MSERVICES_" in result.stdout


@pytest.mark.parametrize(
    ("command", "description"),
    [
        (("serve",), "serve HTTP"),
        (("db",), "database schema migrations"),
        (("db", "upgrade"), "apply pending migrations"),
        (("db", "downgrade"), "revert migrations"),
        (("db", "current"), "print the database's revision"),
        (("createsuperuser",), "create an administrator account"),
        (("demo",), "load demo roles"),
    ],
    ids=["serve", "db", "db-upgrade", "db-downgrade", "db-current", "createsuperuser", "demo"],
)
def test_help_of_each_command_exits_0_and_describes_the_command(
    tmp_path: Path, command: Sequence[str], description: str
) -> None:
    result = run(tmp_path, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: mservices {' '.join(command)}")
    assert description in result.stdout


def test_help_touches_no_data_dir(tmp_path: Path) -> None:
    run(tmp_path, "serve", "--help")
    assert not (tmp_path / "data").exists()


def test_a_missing_command_is_a_usage_error_with_exit_code_2(tmp_path: Path) -> None:
    result = run(tmp_path, "db")
    assert result.returncode == 2
    assert "usage: mservices db" in result.stderr


# --- failures are one line ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "70000"])
def test_an_invalid_setting_exits_2_with_one_line_naming_the_variable(
    tmp_path: Path, value: str
) -> None:
    result = run(tmp_path, "db", "current", env=clean_env(MSERVICES_PORT=value))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mservices: invalid setting MSERVICES_PORT: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_setting_in_a_dotenv_file_of_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MSERVICES_PORT=abc\n", encoding="utf-8")
    result = run(tmp_path, "db", "current")
    assert result.returncode == 2
    assert "MSERVICES_PORT" in result.stderr


def test_an_unreachable_database_exits_1_with_one_line_and_the_password_masked(
    tmp_path: Path,
) -> None:
    url = "mysql+asyncmy://root:hunter2@127.0.0.1:1/nope"
    result = run(tmp_path, "db", "current", env=external_env(url))
    assert result.returncode == 1
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mservices: ")
    assert "mysql+asyncmy://root:***@127.0.0.1:1/nope" in lines[0]


# --- migrations on the embedded database --------------------------------------------------------


def test_db_current_on_a_fresh_embedded_database_says_it_is_out_of_date(tmp_path: Path) -> None:
    result = run(tmp_path, "db", "current")
    assert result.returncode == 0, result.stderr
    assert "out of date" in result.stdout
    assert "mservices db upgrade" in result.stdout
    assert current_revision(embedded_url(tmp_path)) is None


def test_db_upgrade_brings_the_embedded_database_to_head(tmp_path: Path) -> None:
    head = schema.head_revision()
    result = run(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert head in result.stdout
    assert current_revision(embedded_url(tmp_path)) == head
    assert {table.name for table in Base.metadata.sorted_tables} <= table_names(
        embedded_url(tmp_path)
    )
    after = run(tmp_path, "db", "current")
    assert "up to date" in after.stdout


def test_db_downgrade_base_empties_the_embedded_database(tmp_path: Path) -> None:
    assert run(tmp_path, "db", "upgrade").returncode == 0
    result = run(tmp_path, "db", "downgrade", "base")
    assert result.returncode == 0, result.stderr
    assert "base" in result.stdout
    assert current_revision(embedded_url(tmp_path)) is None
    assert table_names(embedded_url(tmp_path)) <= {"alembic_version"}


# --- serving ------------------------------------------------------------------------------------


def test_serve_on_the_embedded_database_migrates_by_itself_and_serves_the_index(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = clean_env(MSERVICES_PORT=str(port), MSERVICES_TCP_PORT="0")
    with serving(tmp_path, env) as process:
        status = wait_for_status(process, f"http://127.0.0.1:{port}/", 200)
        errors = (tmp_path / "serve.err").read_text(encoding="utf-8", errors="replace")
        assert status == 200, f"status {status}; stderr:\n{errors}"
        assert stop(process) == 0
    assert current_revision(embedded_url(tmp_path)) == schema.head_revision()
    assert stat.S_IMODE((tmp_path / "data" / "cookie_secret").stat().st_mode) == 0o600


@pytest.mark.mariadb
def test_serve_refuses_an_unmigrated_external_database_and_says_to_upgrade(
    tmp_path: Path, scratch_mysql_url: str
) -> None:
    env = external_env(scratch_mysql_url, MSERVICES_PORT=str(free_port()), MSERVICES_TCP_PORT="0")
    result = run(tmp_path, "serve", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    said = messages(result.stderr)
    assert len(said) == 1, result.stderr
    assert said[0].startswith("mservices: ")
    assert "run `mservices db upgrade`" in said[0]
    assert current_revision(scratch_mysql_url) is None


@pytest.mark.mariadb
def test_serve_on_an_upgraded_external_database_answers_and_stops_cleanly_on_sigterm(
    tmp_path: Path, scratch_mysql_url: str
) -> None:
    port = free_port()
    env = external_env(scratch_mysql_url, MSERVICES_PORT=str(port), MSERVICES_TCP_PORT="0")
    upgrade = run(tmp_path, "db", "upgrade", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    with serving(tmp_path, env) as process:
        status = wait_for_status(process, f"http://127.0.0.1:{port}/healthz", 200)
        errors = (tmp_path / "serve.err").read_text(encoding="utf-8", errors="replace")
        assert status == 200, f"status {status}; stderr:\n{errors}"
        assert stop(process) == 0
    assert not (tmp_path / "data").exists()


# --- createsuperuser ----------------------------------------------------------------------------


def test_createsuperuser_with_a_good_password_creates_a_superuser(tmp_path: Path) -> None:
    password = "correct horse battery"
    result = run(
        tmp_path,
        "createsuperuser",
        "--name",
        "boss",
        "--password-stdin",
        stdin_text=password + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "boss" in result.stdout
    stored = stored_user(embedded_url(tmp_path), "boss")
    assert stored is not None
    is_superuser, password_hash = stored
    assert is_superuser
    assert password not in password_hash
    assert password_matches(password_hash, password)


def test_createsuperuser_with_a_7_character_password_exits_1_and_creates_nothing(
    tmp_path: Path,
) -> None:
    result = run(
        tmp_path, "createsuperuser", "--name", "boss", "--password-stdin", stdin_text="1234567\n"
    )
    assert result.returncode == 1
    said = messages(result.stderr)
    assert len(said) == 1, result.stderr
    assert "password" in said[0]
    assert "8" in said[0]
    assert "Traceback" not in result.stderr
    assert row_counts(embedded_url(tmp_path))["user"] == 0


def test_createsuperuser_with_a_taken_name_exits_1_and_says_so(tmp_path: Path) -> None:
    first = run(
        tmp_path, "createsuperuser", "--name", "boss", "--password-stdin", stdin_text="first-pass\n"
    )
    assert first.returncode == 0, first.stderr
    second = run(
        tmp_path, "createsuperuser", "--name", "boss", "--password-stdin", stdin_text="other-pass\n"
    )
    assert second.returncode == 1
    said = messages(second.stderr)
    assert len(said) == 1, second.stderr
    assert "boss" in said[0]
    assert "taken" in said[0]
    stored = stored_user(embedded_url(tmp_path), "boss")
    assert stored is not None
    assert password_matches(stored[1], "first-pass")
    assert row_counts(embedded_url(tmp_path))["user"] == 1


def test_createsuperuser_without_a_terminal_or_password_stdin_exits_1_pointing_to_the_flag(
    tmp_path: Path,
) -> None:
    result = run(tmp_path, "createsuperuser", "--name", "boss", stdin_text="a-password\n")
    assert result.returncode == 1
    said = messages(result.stderr)
    assert len(said) == 1, result.stderr
    assert "--password-stdin" in said[0]
    assert row_counts(embedded_url(tmp_path))["user"] == 0


# --- demo ---------------------------------------------------------------------------------------


def demo_credentials(stdout: str) -> dict[str, str]:
    """The ``name password`` pairs a first ``mservices demo`` prints."""
    pairs = (line.split() for line in stdout.splitlines() if line.startswith("  "))
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def test_demo_prints_the_three_demo_users_with_their_passwords(tmp_path: Path) -> None:
    result = run(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    credentials = demo_credentials(result.stdout)
    assert set(credentials) == set(DEMO_NAMES)
    for name, password in credentials.items():
        stored = stored_user(embedded_url(tmp_path), name)
        assert stored is not None
        assert password_matches(stored[1], password), name


def test_demo_keeps_the_credentials_in_a_0600_file_in_the_data_dir(tmp_path: Path) -> None:
    result = run(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "data" / "demo-credentials.txt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = dict(line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())
    assert kept == demo_credentials(result.stdout)
    assert "data/demo-credentials.txt" in result.stdout


def test_demo_run_twice_says_already_present_and_adds_nothing(tmp_path: Path) -> None:
    first = run(tmp_path, "demo")
    assert first.returncode == 0, first.stderr
    path = tmp_path / "data" / "demo-credentials.txt"
    kept = path.read_text(encoding="utf-8")
    counts = row_counts(embedded_url(tmp_path))
    assert all(counts[table] > 0 for table in ("role", "menu", "user", "goods", "orders"))
    second = run(tmp_path, "demo")
    assert second.returncode == 0, second.stderr
    assert "already present" in second.stdout
    assert demo_credentials(second.stdout) == {}
    for name in DEMO_NAMES:
        assert name in second.stdout
    assert row_counts(embedded_url(tmp_path)) == counts
    assert path.read_text(encoding="utf-8") == kept


# --- serve --processes --------------------------------------------------------------------------

CHILD_LINE = re.compile(r"process (\d+) \(pid (\d+)\) serving on http://[^:]+:(\d+)")


@dataclass(frozen=True, slots=True)
class Supervised:
    """A running ``mservices serve --processes N``: the supervisor and its children's ports."""

    process: subprocess.Popen[bytes]
    ports: tuple[int, ...]
    cwd: Path

    def stderr(self) -> str:
        """What the supervisor and its children logged so far."""
        return (self.cwd / "serve.err").read_text(encoding="utf-8", errors="replace")

    def child_pids(self) -> dict[int, int]:
        """Each child's HTTP port → its pid, as the supervisor logged them (after a restart,
        the new process's)."""
        return {int(port): int(pid) for _, pid, port in CHILD_LINE.findall(self.stderr())}


def multi_process_env(mysql_url: str, redis_url: str, **variables: str) -> dict[str, str]:
    """The environment of ``serve --processes 2`` on the MariaDB test database and Redis (a
    prefix of its own), on two consecutive free ports, TCP chat off unless overridden."""
    variables.setdefault("MSERVICES_TCP_PORT", "0")
    return external_env(
        mysql_url,
        MSERVICES_REDIS_URL=redis_url,
        MSERVICES_REDIS_PREFIX=f"test-{secrets.token_hex(6)}",
        MSERVICES_HOST="127.0.0.1",
        MSERVICES_PORT=str(free_ports(2)),
        **variables,
    )


@contextmanager
def serving_processes(cwd: Path, env: dict[str, str], count: int = 2) -> Iterator[Supervised]:
    """``mservices serve --processes count`` once every process answers ``/healthz``; the
    supervisor is killed afterwards if the test left it running (its children follow it)."""
    first = int(env["MSERVICES_PORT"])
    ports = tuple(range(first, first + count))
    with serving(cwd, env, "--processes", str(count)) as process:
        supervised = Supervised(process, ports, cwd)
        for port in ports:
            url = f"http://127.0.0.1:{port}/healthz"
            status = wait_for_status(process, url, 200, timeout=PROCESSES_TIMEOUT)
            assert status == 200, f"port {port}: status {status}; stderr:\n{supervised.stderr()}"
        yield supervised


@pytest.fixture
def redis_url() -> str:
    """The Redis test server's URL, or skip (fail when services are required)."""
    return service_url("MSERVICES_TEST_REDIS_URL", "Redis")


def test_serve_processes_on_the_embedded_database_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--processes", "2", env=clean_env(MSERVICES_TCP_PORT="0"))
    assert result.returncode == 2
    said = messages(result.stderr)
    assert len(said) == 1, result.stderr
    assert said[0].startswith("mservices: --processes 2 needs MariaDB")
    assert "MSERVICES_DATABASE_URL" in said[0]
    assert not (tmp_path / "data").exists()


def test_serve_processes_without_redis_exits_2_with_one_line(tmp_path: Path) -> None:
    env = external_env("mysql+asyncmy://root@127.0.0.1:1/nope")
    result = run(tmp_path, "serve", "--processes", "2", env=env)
    assert result.returncode == 2
    said = messages(result.stderr)
    assert len(said) == 1, result.stderr
    assert "needs Redis" in said[0]
    assert "MSERVICES_REDIS_URL" in said[0]


def test_serve_processes_past_the_last_port_exits_2(tmp_path: Path) -> None:
    env = external_env(
        "mysql+asyncmy://root@127.0.0.1:1/nope",
        MSERVICES_REDIS_URL="redis://127.0.0.1:1/0",
        MSERVICES_PORT="65535",
    )
    result = run(tmp_path, "serve", "--processes", "2", env=env)
    assert result.returncode == 2
    assert "65535" in messages(result.stderr)[0]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_serve_processes_must_be_a_whole_number_of_at_least_1(tmp_path: Path, value: str) -> None:
    result = run(tmp_path, "serve", "--processes", value)
    assert result.returncode == 2
    assert "--processes" in result.stderr


@pytest.mark.mariadb
@pytest.mark.redis
def test_serve_processes_2_serves_on_consecutive_ports_and_stops_all_on_sigterm(
    tmp_path: Path, mysql_url: str, redis_url: str
) -> None:
    env = multi_process_env(mysql_url, redis_url)
    with serving_processes(tmp_path, env) as supervised:
        instances = set()
        for port in supervised.ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                instances.add(answer.headers["X-Mservices-Instance"])
        assert instances == {str(port) for port in supervised.ports}
        children = supervised.child_pids()
        assert sorted(children) == list(supervised.ports)
        assert stop(supervised.process, timeout=PROCESSES_TIMEOUT) == 0
    for pid in children.values():
        assert not _alive(pid)
    assert supervised.stderr().count("stopped") >= 2


def _alive(pid: int) -> bool:
    """True while ``pid`` exists (and is not a zombie of ours: the supervisor reaps them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

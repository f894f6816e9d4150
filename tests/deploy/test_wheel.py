"""The wheel as an operator installs it: built from a copy of this checkout, installed in a fresh
virtualenv outside it, migrated and served from another directory on the embedded SQLite
database; the home page (in Chinese, from the packaged catalogs), a static file, ``/docs`` and a
login answer.

One wheel, one virtualenv and one server per session. The wheel is built from a copy of the
working tree (uncommitted changes included; the checkout gets no ``build/``) with the dev lock's
setuptools and no build isolation, so nothing is downloaded. The virtualenv gets exactly the
distributions of ``requirements.lock``, no dev tool, then the wheel with ``--no-deps`` and a
``pip check``: a module the server imports but the wheel does not declare fails here, and so does
a declared range the lock does not satisfy. Those distributions are copied from the running
environment (which ``make`` installed from the same lock; their versions are checked against
it), because downloading them takes longer than the rest of the test together and needs the
network; ``MSERVICES_TEST_WHEEL_FROM_INDEX=1`` installs them with ``pip install -r
requirements.lock`` instead, as ``deploy/README.md`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from repositories.schema import head_revision
from tests.conftest import REQUIRE_SERVICES

pytestmark = pytest.mark.wheel

CHECKOUT = Path(__file__).resolve().parents[2]
LOCK = CHECKOUT / "requirements.lock"
FROM_INDEX = os.environ.get("MSERVICES_TEST_WHEEL_FROM_INDEX") == "1"
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "data", "__pycache__", "*.egg-info", ".*_cache"
)
"""What the wheel's source copy leaves out: version control, environments, build output and
local state (as a fresh clone would)."""
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
RUN_TIMEOUT = 120.0
SERVE_TIMEOUT = 20.0
KEPT_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
ADMIN = "wheeladmin"
PASSWORD = "correct horse battery"


@dataclass(frozen=True, slots=True)
class Installed:
    """A fresh virtualenv holding the locked requirements and the wheel."""

    venv: Path

    @property
    def python(self) -> str:
        """The virtualenv's interpreter."""
        return str(self.venv / "bin" / "python")

    @property
    def mservices(self) -> str:
        """The ``mservices`` console script the wheel installed."""
        return str(self.venv / "bin" / "mservices")


@dataclass(frozen=True, slots=True)
class Served:
    """``mservices serve`` from the virtualenv, and where it answers."""

    base_url: str
    cwd: Path


def cannot_run(reason: str) -> None:
    """Skip, or fail when the CI tiers are required."""
    if REQUIRE_SERVICES:
        pytest.fail(f"MSERVICES_TEST_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def clean_env(**variables: str) -> dict[str, str]:
    """A minimal environment: no ``MSERVICES_*``, no ``PYTHONPATH``, nothing of this venv."""
    env = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """Run a command to completion and return its stdout; fails the test when it fails."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def locked_versions() -> dict[str, str]:
    """Every distribution ``requirements.lock`` pins, by canonical name."""
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def canonical(name: str) -> str:
    """A distribution name as packaging normalises it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages(venv: Path) -> Path:
    """The ``site-packages`` directory of ``venv``."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def copy_locked_distributions(target: Path) -> None:
    """Copy each distribution of ``requirements.lock`` from this environment into ``target``
    (a ``site-packages``), file by file as its ``RECORD`` lists them."""
    for name, version in locked_versions().items():
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            cannot_run(f"{name} (requirements.lock) is not installed here: run `make`")
        if distribution.version != version:
            cannot_run(f"{name} is {distribution.version} here, {version} in the lock: run `make`")
        for file in distribution.files or ():
            if ".." in file.parts:
                continue  # console scripts and headers outside site-packages
            source = Path(str(distribution.locate_file(file)))
            if source.is_file():
                destination = target / file
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(
    url: str, *, body: object | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """GET (or POST ``body`` as JSON) and return the status and the text of the answer."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode("utf-8")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mservices-*.whl`` built from a copy of the working tree, without network."""
    try:
        setuptools = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        setuptools = "0"
    if int(setuptools.split(".")[0]) < 77:
        cannot_run(f"building needs the dev lock's setuptools (here {setuptools}): run `make`")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(CHECKOUT, source, ignore=NOT_COPIED, symlinks=True)
    run(
        sys.executable,
        *("-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
        *("--wheel-dir", str(work / "dist"), str(source)),
        cwd=work,
        env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )
    (built,) = (work / "dist").glob("mservices-*.whl")
    return built


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Installed:
    """A fresh virtualenv outside the checkout: the locked requirements, then the wheel."""
    venv = tmp_path_factory.mktemp("venv") / "mservices"
    work = venv.parent
    # Without its own pip (ensurepip takes seconds): this environment's pip installs into it.
    run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=work)
    target = Installed(venv)
    pip = (sys.executable, "-m", "pip", "--python", target.python, "--disable-pip-version-check")
    if FROM_INDEX:
        index = {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
        run(*pip, "install", "--quiet", "-r", str(LOCK), cwd=work, env=clean_env(**index))
    else:
        copy_locked_distributions(site_packages(venv))
    run(*pip, "install", "--quiet", "--no-deps", "--no-index", str(wheel), cwd=work)
    run(*pip, "check", cwd=work)
    return target


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, installed: Installed) -> Iterator[Served]:
    """``mservices db upgrade`` (which must leave the embedded database at head),
    ``createsuperuser`` and ``serve`` from the virtualenv, run in a directory of their own (the
    database lands in its ``data/``)."""
    cwd = tmp_path_factory.mktemp("run")
    port = free_port()
    env = clean_env(MSERVICES_HOST="127.0.0.1", MSERVICES_PORT=str(port), MSERVICES_TCP_PORT="0")
    run(installed.mservices, "db", "upgrade", cwd=cwd, env=env)
    # Checked before serve starts: the embedded database would be migrated by serve itself.
    assert schema_revision(cwd / "data" / "mservices.db") == head_revision()
    run(
        *(installed.mservices, "createsuperuser", "--name", ADMIN, "--password-stdin"),
        cwd=cwd,
        env=env,
        stdin=PASSWORD,
    )
    with (cwd / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [installed.mservices, "serve"], cwd=cwd, env=env, stdout=log, stderr=log
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited {process.returncode}:\n{log_of(cwd)}")
            try:
                if fetch(f"{base_url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not answer within {SERVE_TIMEOUT} s:\n{log_of(cwd)}")
            time.sleep(0.1)
        yield Served(base_url=base_url, cwd=cwd)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def schema_revision(database: Path) -> str:
    """The Alembic revision an SQLite database file is at."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(revision)


def log_of(cwd: Path) -> str:
    """What ``serve`` logged."""
    return (cwd / "serve.log").read_text(encoding="utf-8", errors="replace")


def test_the_wheel_carries_templates_static_files_migrations_and_catalogs(wheel: Path) -> None:
    names = wheel_names(wheel)
    expected = {
        "server/templates/base.html",
        "server/templates/errors/error.html",
        "server/static/css/site.css",
        "server/static/js/i18n.js",
        "server/locale/script-messages.json",
        "server/locale/zh_CN/LC_MESSAGES/mservices.mo",
        "server/locale/zh_CN/LC_MESSAGES/mservices.po",
        "server/locale/en_US/LC_MESSAGES/mservices.mo",
        "server/security/common-passwords.txt",
        "migrations/alembic.ini",
        "migrations/env.py",
        "migrations/script.py.mako",
        "migrations/versions/0001_initial_schema.py",
    }
    assert expected <= names
    for folder in ("templates", "static"):
        in_checkout = {
            path.relative_to(CHECKOUT).as_posix()
            for path in (CHECKOUT / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        assert {f"server/{name}" for name in in_checkout} <= names


def test_the_wheel_holds_no_tests_benchmarks_or_local_state(wheel: Path) -> None:
    tops = {name.split("/")[0] for name in wheel_names(wheel)}
    assert tops == {"server", "schemas", "repositories", "migrations", wheel_dist_info(wheel)}


def wheel_names(wheel: Path) -> set[str]:
    """The paths inside the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def wheel_dist_info(wheel: Path) -> str:
    """The wheel's ``.dist-info`` directory name."""
    name, version = wheel.name.split("-")[:2]
    return f"{name}-{version}.dist-info"


def test_the_installed_server_reads_its_files_from_the_virtualenv(
    installed: Installed, tmp_path: Path
) -> None:
    script = (
        "import json; from server import resources as r; "
        "print(json.dumps({n: str(getattr(r, n)) for n in "
        "('SERVER_DIR', 'TEMPLATE_DIR', 'STATIC_DIR', 'CATALOG_DIR', 'MIGRATIONS_DIR', "
        "'ALEMBIC_INI')}))"
    )
    paths = json.loads(run(installed.python, "-c", script, cwd=tmp_path))
    packages = site_packages(installed.venv)
    assert paths == {
        "SERVER_DIR": str(packages / "server"),
        "TEMPLATE_DIR": str(packages / "server" / "templates"),
        "STATIC_DIR": str(packages / "server" / "static"),
        "CATALOG_DIR": str(packages / "server" / "locale"),
        "MIGRATIONS_DIR": str(packages / "migrations"),
        "ALEMBIC_INI": str(packages / "migrations" / "alembic.ini"),
    }


def test_the_packaged_alembic_configuration_finds_the_migrations(
    installed: Installed, tmp_path: Path
) -> None:
    script = (
        "from alembic.config import Config; from alembic.script import ScriptDirectory; "
        "from server.resources import ALEMBIC_INI; "
        "print(ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head())"
    )
    assert run(installed.python, "-c", script, cwd=tmp_path).strip() == head_revision()


def test_the_home_page_is_served_in_chinese_from_the_packaged_catalogs(served: Served) -> None:
    page = answer(served, "/", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="zh' in page
    assert "登录" in page
    assert "登录" not in answer(served, "/", headers={"Accept-Language": "en"})


def test_a_static_file_is_served_from_the_package(served: Served) -> None:
    css = answer(served, "/s/css/site.css")
    assert css == (CHECKOUT / "static" / "css" / "site.css").read_text(encoding="utf-8")


def test_the_api_reference_page_is_served(served: Served) -> None:
    assert "/s/js/docs.js" in answer(served, "/docs")
    assert "/user/login" in json.loads(answer(served, "/openapi.json"))["paths"]


def test_the_superuser_created_by_the_command_line_logs_in(served: Served) -> None:
    login = json.loads(answer(served, "/user/login", body={"name": ADMIN, "pwd": PASSWORD}))
    me = answer(served, "/user/me", headers={"Authorization": f"Bearer {login['token']}"})
    assert json.loads(me)["user"]["name"] == ADMIN


def answer(
    served: Served, path: str, *, body: object | None = None, headers: dict[str, str] | None = None
) -> str:
    """The text of a 200 answer to ``path``; any other status fails with the server's log."""
    status, text = fetch(served.base_url + path, body=body, headers=headers)
    assert status == 200, f"{path}: {status} {text[:500]}\n{log_of(served.cwd)[-4000:]}"
    return text

"""Schemathesis over ``/openapi.json`` against a real ``mservices serve`` process: no 5xx, and
every response has a documented status and matches its documented schema.

Schemathesis is synchronous, so the app runs in a subprocess (a fresh data directory with the
demo data) rather than in this test's event loop. Bearer operations get a live token of the demo
``customer``. Our own logins leave from a second loopback address, so the failed logins that
schemathesis provokes from 127.0.0.1 (throttled per name and IP, and per IP) can never lock this
helper out; it only ever sends the right password.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from server.routes import build_routes
from server.services import Services

HOST = "127.0.0.1"
HELPER_ADDRESS = "127.0.0.2"
"""Where this test's own calls come from: another throttling bucket than schemathesis's."""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MAX_EXAMPLES = 15


def mservices_command() -> list[str]:
    """The ``mservices`` console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "mservices"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "server"]


def clean_env(**variables: str) -> dict[str, str]:
    """This environment without any ``MSERVICES_*`` variable, plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MSERVICES_")}
    env.update(variables)
    return env


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Answer:
    """A helper call's status and JSON body."""

    status: int
    body: Any


@dataclass(frozen=True, slots=True)
class LiveServer:
    """A running ``mservices serve`` process."""

    port: int
    data_dir: Path

    @property
    def base_url(self) -> str:
        """Where it listens."""
        return f"http://{HOST}:{self.port}"

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Answer:
        """One JSON request from ``HELPER_ADDRESS``."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        connection = http.client.HTTPConnection(
            HOST, self.port, timeout=10, source_address=(HELPER_ADDRESS, 0)
        )
        try:
            payload = None if body is None else json.dumps(body)
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        return Answer(response.status, json.loads(raw) if raw else None)


def wait_until_healthy(process: subprocess.Popen[bytes], server: LiveServer, log: Path) -> None:
    """Poll ``/healthz`` until it answers 200; fail if the process dies or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(encoding="utf-8", errors="replace")
            pytest.fail(f"mservices serve exited with {process.returncode}:\n{output}")
        try:
            if server.call("GET", "/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"mservices serve did not answer /healthz within {START_TIMEOUT} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process does not leave in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``mservices demo`` then ``mservices serve`` in a fresh directory; stopped afterwards."""
    cwd = tmp_path_factory.mktemp("schemathesis")
    server = LiveServer(port=free_port(), data_dir=cwd / "data")
    env = clean_env(
        MSERVICES_DATA_DIR=str(server.data_dir),
        MSERVICES_PORT=str(server.port),
        MSERVICES_TCP_PORT="0",
    )
    demo = subprocess.run(
        [*mservices_command(), "demo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    log = cwd / "serve.log"
    # The log goes to a file: an unread pipe fills up and blocks the server.
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*mservices_command(), "serve"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(process, server, log)
        yield server
    finally:
        stop(process)


class Account:
    """The demo ``customer``, with a token that is checked (and renewed) before each case.

    Schemathesis logs out, revokes sessions and renames the account, so the token is verified
    with ``GET /user/me`` (cheap: no password hashing), which also tracks the current name.
    """

    def __init__(self, server: LiveServer, name: str, password: str) -> None:
        self.server = server
        self.name = name
        self.password = password
        self._token: str | None = None

    def token(self) -> str:
        """A token that authenticates right now."""
        if self._token is not None:
            me = self.server.call("GET", "/user/me", token=self._token)
            if me.status == 200:
                self.name = me.body["user"]["name"]
                return self._token
        login = self.server.call("POST", "/user/login", {"name": self.name, "pwd": self.password})
        assert login.status == 200, f"the helper's own login failed: {login}"
        token: str = login.body["token"]
        self._token = token
        return token


def demo_password(data_dir: Path, name: str) -> str:
    """The password ``mservices demo`` wrote for ``name``."""
    for line in (data_dir / "demo-credentials.txt").read_text(encoding="utf-8").splitlines():
        user, _, password = line.partition(" ")
        if user == name:
            return password
    raise AssertionError(f"no demo credentials for {name!r}")


@pytest.fixture(scope="module")
def account(live_server: LiveServer) -> Account:
    """The demo customer of this run's server."""
    return Account(live_server, "customer", demo_password(live_server.data_dir, "customer"))


def route_table_document() -> dict[str, Any]:
    """The OpenAPI document the route table generates (building it touches no service)."""
    for rule in build_routes(cast(Services, None)):
        document = rule.target_kwargs.get("document")
        if document is not None:
            return cast(dict[str, Any], document)
    raise AssertionError("the route table serves no OpenAPI document")


# The schema must exist when pytest collects, one test per operation, and the server does not run
# yet then: schemathesis's lazy ``from_fixture`` would load it later, but it is broken on pytest
# 9.2 (it sets ``request.node._nodeid``, which pytest 9.2 no longer has). So the route table's
# document is fuzzed, and the first test proves it is exactly what ``/openapi.json`` serves.
DOCUMENT = route_table_document()
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))

# Rules JSON Schema cannot express are checked by the API on purpose and answered with the
# documented 422 (the password policy: common passwords, not the account name; printable names),
# so "schema-valid data must be accepted" cannot hold; every other default check runs.
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]


def needs_token(case: Case) -> bool:
    """True when the operation documents bearer authentication."""
    return bool(case.operation.definition.raw.get("security"))


def test_the_fuzzed_document_is_the_served_one(live_server: LiveServer) -> None:
    served = schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json", timeout=10)
    assert served.raw_schema == DOCUMENT
    assert DOCUMENT["openapi"] == "3.1.0"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_as_documented(
    case: Case, live_server: LiveServer, account: Account
) -> None:
    headers = {"Authorization": f"Bearer {account.token()}"} if needs_token(case) else None
    case.call_and_validate(
        base_url=live_server.base_url,
        headers=headers,
        timeout=30,
        excluded_checks=EXCLUDED_CHECKS,
    )

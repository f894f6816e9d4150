"""``mservices`` as real processes for tests: an environment on free loopback ports, a user created
with ``createsuperuser``, and ``serve`` started and waited for.

Built on the command-line helpers of ``tests/server/test_cli.py`` (a clean environment without
the caller's ``MSERVICES_*``, every wait bounded); a process a test leaves running is killed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.server.test_cli import clean_env, free_port, run, serving, wait_for_status

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Served:
    """A running ``mservices serve`` and where it listens."""

    process: subprocess.Popen[bytes]
    http_port: int
    tcp_port: int
    cwd: Path

    @property
    def base_url(self) -> str:
        """``http://HOST:port`` of the HTTP server."""
        return f"http://{HOST}:{self.http_port}"

    def stderr(self) -> str:
        """What the process logged so far."""
        return (self.cwd / "serve.err").read_text(encoding="utf-8", errors="replace")


def server_env(**variables: str) -> dict[str, str]:
    """A clean environment for ``mservices`` on HOST with free HTTP and TCP ports, plus
    ``variables``."""
    return clean_env(
        MSERVICES_HOST=HOST,
        MSERVICES_PORT=str(free_port()),
        MSERVICES_TCP_PORT=str(free_port()),
        **variables,
    )


def mservices(cwd: Path, env: dict[str, str], *args: str, stdin_text: str | None = None) -> str:
    """Run ``mservices args`` in ``cwd`` and return its stdout; fails the test when it fails."""
    result = run(cwd, *args, env=env, stdin_text=stdin_text)
    assert result.returncode == 0, f"mservices {' '.join(args)}: {result.stderr}"
    return result.stdout


def create_superuser(cwd: Path, env: dict[str, str], name: str, password: str) -> None:
    """``mservices createsuperuser --name NAME --password-stdin``."""
    mservices(cwd, env, "createsuperuser", "--name", name, "--password-stdin", stdin_text=password)


@contextmanager
def serve(cwd: Path, env: dict[str, str]) -> Iterator[Served]:
    """``mservices serve`` in ``cwd`` with ``env`` (from ``server_env``), once ``/healthz``
    answers 200; killed afterwards if the test left it running."""
    http_port, tcp_port = int(env["MSERVICES_PORT"]), int(env["MSERVICES_TCP_PORT"])
    cwd.mkdir(parents=True, exist_ok=True)
    with serving(cwd, env) as process:
        served = Served(process, http_port, tcp_port, cwd)
        status = wait_for_status(process, f"{served.base_url}/healthz", 200)
        assert status == 200, f"status {status}; stderr:\n{served.stderr()}"
        yield served

"""Start, wait for, and stop the server processes the harness measures.

Servers run as real processes on 127.0.0.1, each in its own session so that stopping one signals
its whole process group (SIGTERM, then SIGKILL after a grace period). Their output goes to log
files, never to pipes that could fill and stall them.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
COMMAND_TIMEOUT_S = 120.0
"""Limit for the one-shot ``mservices db upgrade`` and ``mservices demo`` commands."""

_POLL_INTERVAL_S = 0.2
_REPO_ROOT = Path(__file__).resolve().parent.parent
# Loopback requests must never go through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """A server or one of its set-up commands failed; the message carries its output's tail."""


@dataclass(frozen=True)
class Pinning:
    """Command prefixes that keep the server and the load generator on different cores."""

    server: tuple[str, ...] = ()
    load: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether the two sides are pinned at all."""
        return bool(self.server)


@dataclass(frozen=True)
class Target:
    """One mservices configuration to measure: a name for the report and its database URL.

    ``database_url`` is None for the embedded SQLite default. It may hold a password, so it is
    never printed; reports use ``name``.
    """

    name: str
    database_url: str | None = None


class ServerProcess:
    """A running server process and the log files its output goes to."""

    def __init__(
        self, name: str, process: subprocess.Popen[bytes], log_dir: Path, base_url: str
    ) -> None:
        """Wrap a started ``process`` serving ``base_url``, its output written under ``log_dir``."""
        self.name = name
        self.process = process
        self.log_dir = log_dir
        self.base_url = base_url

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stderr_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines the process wrote to stderr."""
        return _tail_file(self.log_dir / f"{self.name}.stderr", lines)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still running after ``grace_s``."""
        if not self.alive:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=grace_s)


def cpu_pinning() -> Pinning:
    """Pin the server to the first allowed core and wrk to the second, when both exist.

    Uses this process's CPU affinity rather than ``os.cpu_count()`` so that a container limited to
    some cores still gets two it may use. Without ``taskset`` or a second core nothing is pinned.
    """
    taskset = shutil.which("taskset")
    cores = sorted(os.sched_getaffinity(0))
    if taskset is None or len(cores) < 2:
        return Pinning()
    return Pinning(server=(taskset, "-c", str(cores[0])), load=(taskset, "-c", str(cores[1])))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def start(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    base_url: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start ``argv``, to serve ``base_url``, in a new session; its output goes to ``log_dir``."""
    with (
        open(log_dir / f"{name}.stdout", "wb") as stdout,
        open(log_dir / f"{name}.stderr", "wb") as stderr,
    ):
        try:
            process = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as error:
            raise ServerError(f"cannot start {name}: {error}") from error
    return ServerProcess(name, process, log_dir, base_url)


def wait_ready(server: ServerProcess, path: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``path`` until it answers 200; raise ``ServerError`` on timeout or if it exits."""
    url = server.base_url + path
    deadline = time.monotonic() + timeout_s
    problem: str | None = "not polled"
    for _ in range(int(timeout_s / _POLL_INTERVAL_S) + 1):
        if not server.alive:
            raise ServerError(
                f"{server.name} exited with status {server.process.returncode} before it was ready;"
                f" stderr tail:\n{server.stderr_tail()}"
            )
        problem = _probe(url)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_INTERVAL_S)
    raise ServerError(
        f"{server.name} did not answer 200 on {url} within {timeout_s:.0f} s (last: {problem});"
        f" stderr tail:\n{server.stderr_tail()}"
    )


@contextmanager
def floor_server(log_dir: Path, pinning: Pinning) -> Iterator[ServerProcess]:
    """Run the floor server (``bench/floor.py``) until ready and yield it; always stop it."""
    with module_server("floor", "bench.floor", log_dir, pinning) as server:
        yield server


@contextmanager
def module_server(
    name: str, module: str, log_dir: Path, pinning: Pinning
) -> Iterator[ServerProcess]:
    """Run ``python -m MODULE PORT`` on the server core until ``GET /`` answers 200 and yield it;
    always stop it. The floor and the chat fan-out peer are started this way."""
    port = free_port()
    server = start(
        name,
        [*pinning.server, sys.executable, "-m", module, str(port)],
        log_dir,
        f"http://{HOST}:{port}",
        cwd=_REPO_ROOT,
    )
    try:
        wait_ready(server, "/")
        yield server
    finally:
        server.stop()


def find_mservices() -> Path:
    """Return the ``mservices`` console script next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "mservices"
    if beside.is_file():
        return beside
    found = shutil.which("mservices")
    if found is None:
        raise ServerError(
            f"the mservices command is not installed (looked in {beside.parent} and on PATH);"
            " run `.venv/bin/pip install -e .` first"
        )
    return Path(found)


def mservices_env(target: Target, data_dir: Path, port: int, tcp_port: int) -> dict[str, str]:
    """Return the environment for mservices: this one minus any ``MSERVICES_*``, plus the target's.

    Inherited ``MSERVICES_*`` variables are dropped so that a developer's shell cannot point the
    benchmark at another database or port.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("MSERVICES_")}
    env.update(
        MSERVICES_DATA_DIR=str(data_dir),
        MSERVICES_PORT=str(port),
        MSERVICES_TCP_PORT=str(tcp_port),
        MSERVICES_HOST=HOST,
    )
    if target.database_url is not None:
        env["MSERVICES_DATABASE_URL"] = target.database_url
        env["MSERVICES_COOKIE_SECRET"] = secrets.token_hex(32)
    return env


def free_ports(count: int) -> int:
    """Return the first of ``count`` consecutive TCP ports on 127.0.0.1 that were all free."""
    for _ in range(100):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        try:
            with ExitStack() as probes:
                for port in range(first + 1, first + count):
                    probe = probes.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    probe.bind((HOST, port))
        except OSError:
            continue
        return first
    raise ServerError(f"found no {count} consecutive free ports on {HOST}")


@contextmanager
def mservices_server(
    executable: Path,
    target: Target,
    work_dir: Path,
    pinning: Pinning,
    extra_env: Mapping[str, str] | None = None,
    processes: int = 1,
    *,
    prepare: bool = True,
) -> Iterator[ServerProcess]:
    """Prepare ``target``'s database, run ``mservices serve`` until ready, and yield the process.

    With ``processes`` > 1 (``serve --processes N``) they listen on consecutive ports from the
    yielded base URL's, the TCP chat is off, and ``extra_env`` must name Redis.

    Runs ``mservices db upgrade`` (not for SQLite, which migrates itself) and ``mservices demo``
    first. The server gets a fresh data directory and ``work_dir`` as its working directory (so no
    ``.env`` file from the checkout leaks in), and is always stopped on exit. ``extra_env``
    (``MSERVICES_*`` settings such as a Redis URL or a cookie secret shared by several processes)
    is applied last. ``prepare=False`` skips the set-up commands, for a second server on a
    database another one has just prepared.
    """
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port, tcp_port = free_ports(processes), 0 if processes > 1 else free_port()
    env = {**mservices_env(target, data_dir, port, tcp_port), **(extra_env or {})}
    if prepare:
        if target.database_url is not None:
            _run_once(target.name, [str(executable), "db", "upgrade"], env, work_dir)
        _run_once(target.name, [str(executable), "demo"], env, work_dir)
        seed_env = {**env, "PYTHONPATH": str(_REPO_ROOT)}
        _run_once(target.name, [sys.executable, "-m", "bench.seed"], seed_env, work_dir)
    server = start(
        f"mservices-{target.name}",
        [*pinning.server, str(executable), "serve", "--processes", str(processes)],
        work_dir,
        f"http://{HOST}:{port}",
        env=env,
        cwd=work_dir,
    )
    try:
        wait_ready(server, "/healthz")
        yield server
    finally:
        server.stop()


def _run_once(label: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
    """Run a one-shot set-up command, discarding its output unless it fails."""
    command = " ".join(argv[1:])
    try:
        completed = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ServerError(
            f"[{label}] `mservices {command}` did not finish within {COMMAND_TIMEOUT_S:.0f} s"
        ) from error
    except OSError as error:
        raise ServerError(f"[{label}] cannot run `mservices {command}`: {error}") from error
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).decode("utf-8", "replace")
        raise ServerError(
            f"[{label}] `mservices {command}` exited with status {completed.returncode};"
            f" output tail:\n{_tail(output, 20)}"
        )


def _probe(url: str) -> str | None:
    """GET ``url`` with a one-second limit; return None on a 200, else what went wrong."""
    try:
        with _OPENER.open(url, timeout=1.0) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (OSError, urllib.error.URLError) as error:
        return str(getattr(error, "reason", error))
    return None if status == 200 else f"HTTP {status}"


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to the process group led by ``pid``, ignoring a group that is gone."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _tail_file(path: Path, lines: int) -> str:
    """Return the last ``lines`` lines of the text file at ``path``, or a note if unreadable."""
    try:
        data = path.read_bytes()[-64_000:]
    except OSError as error:
        return f"(cannot read {path}: {error})"
    return _tail(data.decode("utf-8", "replace"), lines)


def _tail(text: str, lines: int) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"

"""``mservices serve --processes N``: N serving processes on consecutive ports, supervised.

Design (see the README's Deployment section):
- Process *i* (0-based) is a plain ``mservices serve`` started as a subprocess (no fork of a
  process that ever had an event loop) on HTTP port ``PORT + i`` and, when the TCP chat is on,
  TCP port ``TCP_PORT + i``. nginx lists the HTTP ports in its upstream; Prometheus scrapes each
  port's ``/metrics``; every response names its process in ``X-Mservices-Instance`` (its port).
- Several processes share state only through MariaDB and Redis, so both are required: the
  embedded SQLite database and a missing ``MSERVICES_REDIS_URL`` are refused up front.
- The supervisor forwards SIGTERM and SIGINT to every process (which then stops gracefully) and
  exits when all have exited: 0 when every one stopped cleanly, 1 otherwise. Children run in their
  own process group, so a Ctrl-C in the terminal reaches them once, through the supervisor.
- A process that exits on its own (a crash, a port already taken) is not restarted: the
  supervisor stops the others and exits 1, and the service manager (systemd's
  ``Restart=on-failure``) restarts the whole set. One policy, no restart loops hidden inside.
- On Linux each child asks the kernel for SIGTERM when the supervisor dies
  (``PR_SET_PDEATHSIG``), so a killed supervisor never leaves orphans serving.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from server.settings import Settings

log = logging.getLogger("mservices.supervisor")

MAX_PORT = 65535
POLL_SECONDS = 0.2
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


class PlanError(Exception):
    """The settings cannot run several processes; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Child:
    """One serving process of the set: its index and ports."""

    index: int
    http_port: int
    tcp_port: int


def plan(settings: Settings, *, port: int, processes: int) -> list[Child]:
    """The processes to start, or PlanError naming the setting that prevents several."""
    if settings.uses_embedded_database:
        raise PlanError(
            f"--processes {processes} needs MariaDB: the embedded SQLite database serves one "
            "process; set MSERVICES_DATABASE_URL"
        )
    if settings.redis_url is None:
        raise PlanError(
            f"--processes {processes} needs Redis (chat, login throttling and cache "
            "invalidation are shared through it); set MSERVICES_REDIS_URL"
        )
    tcp = settings.tcp_port
    last_http, last_tcp = port + processes - 1, tcp + processes - 1 if tcp else 0
    if last_http > MAX_PORT or last_tcp > MAX_PORT:
        raise PlanError(
            f"--processes {processes} needs ports {port}..{last_http}"
            + (f" and {tcp}..{last_tcp}" if tcp else "")
            + f"; the highest port is {MAX_PORT}"
        )
    return [Child(index, port + index, tcp + index if tcp else 0) for index in range(processes)]


def child_command(host: str, child: Child) -> list[str]:
    """The command line of one serving process."""
    return [sys.executable, "-m", "server", "serve", "--host", host, "--port", str(child.http_port)]


def child_env(base: Mapping[str, str], child: Child) -> dict[str, str]:
    """The environment of one serving process: ``base`` with its own ports."""
    return {
        **base,
        "MSERVICES_PORT": str(child.http_port),
        "MSERVICES_TCP_PORT": str(child.tcp_port),
    }


def supervise(
    host: str,
    children: Sequence[Child],
    *,
    command: Callable[[str, Child], list[str]] = child_command,
) -> int:
    """Run ``children`` (each started as ``command`` gives) until they have all exited; see the
    module docstring for the policy."""
    die_with_parent = _parent_death_signal()
    running: dict[int, tuple[Child, subprocess.Popen[bytes]]] = {}
    state = {"stopping": False, "failed": False}

    def forward(signum: int, frame: FrameType | None) -> None:
        state["stopping"] = True
        for _, process in running.values():
            if process.returncode is None:
                process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        start_children(
            host, children, running, state, command=command, die_with_parent=die_with_parent
        )
        while any(process.returncode is None for _, process in running.values()):
            for child, process in running.values():
                if process.returncode is None:
                    code = process.poll()
                    if code is not None:
                        _on_exit(child, code, state, running)
            # The supervisor is a plain process with no event loop (the serving processes are
            # its children), so sleeping between polls blocks nothing; signals still interrupt.
            time.sleep(POLL_SECONDS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for _, process in running.values():
            if process.returncode is None:
                process.terminate()
                process.wait()
    log.info("all %d processes stopped", len(running))
    failed = state["failed"] or any(process.returncode for _, process in running.values())
    return 1 if failed else 0


def start_children(
    host: str,
    children: Sequence[Child],
    running: dict[int, tuple[Child, subprocess.Popen[bytes]]],
    state: dict[str, bool],
    *,
    command: Callable[[str, Child], list[str]] = child_command,
    die_with_parent: Callable[[], None] | None = None,
) -> None:
    """Start ``children`` one by one into ``running``, unless a stop signal has come.

    The forwarded signals are held while a child starts and joins ``running``, so a signal
    that arrives meanwhile is handled right after, and reaches that child too; once one has
    come, no later child starts. The child itself starts with the signals unblocked.
    """

    def child_setup() -> None:  # in the child, before exec: two system calls
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        if die_with_parent is not None:
            die_with_parent()

    for child in children:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            if state["stopping"]:
                log.info("stopping before process %d started", child.index)
                return
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command(host, child),
                env=child_env(os.environ, child),
                stdin=subprocess.DEVNULL,
                process_group=0,
                preexec_fn=child_setup,
            )
            running[child.index] = (child, process)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        log.info(
            "process %d (pid %d) serving on http://%s:%d%s",
            child.index,
            process.pid,
            host,
            child.http_port,
            f", TCP chat on {child.tcp_port}" if child.tcp_port else "",
        )


def _on_exit(
    child: Child,
    code: int,
    state: dict[str, bool],
    running: Mapping[int, tuple[Child, subprocess.Popen[bytes]]],
) -> None:
    """A process exited: expected while stopping; otherwise stop the others and fail."""
    if state["stopping"]:
        log.info("process %d exited with status %d", child.index, code)
        if code != 0:
            state["failed"] = True
        return
    log.error(
        "process %d (port %d) exited with status %d; stopping the others",
        child.index,
        child.http_port,
        code,
    )
    state["stopping"] = state["failed"] = True
    for _, process in running.values():
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when this process dies (None
    elsewhere). libc is loaded here, before any fork, so the hook only makes one call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook

"""``mservices serve --processes N``: N serving processes on consecutive ports, supervised.

Design (see the README's Deployment section):
- Process *i* (0-based) is a plain ``mservices serve`` started as a subprocess (no fork of a
  process that ever had an event loop) on HTTP port ``PORT + i`` and, when the TCP chat is on,
  TCP port ``TCP_PORT + i``. nginx lists the HTTP ports in its upstream; Prometheus scrapes each
  port's ``/metrics``; every response names its process in ``X-Mservices-Instance`` (its port).
- Several processes share state only through MariaDB and Redis, so both are required: the
  embedded SQLite database and a missing ``MSERVICES_REDIS_URL`` are refused up front.
- A process that exits on its own (a crash, a kill, a port already taken) is started again,
  alone, on the same ports: the others keep serving and keep their WebSockets and TCP clients
  (nginx sends new requests to them meanwhile). The restart waits ``Backoff``: 0.5 s, doubled
  after each exit that came less than a minute after its start, at most 30 s; so a process
  that crashes as it starts costs one start every 30 s, not a core. Each exit is logged (an
  error) with its status, how long the process ran and the wait.
- The supervisor forwards SIGTERM and SIGINT to every process (which then stops gracefully),
  restarts nothing from then on, and exits when all have exited: 0 when every one stopped
  cleanly (status 0, or killed by that signal before it could catch it), 1 otherwise.
  Children run in their own process group, so a Ctrl-C in the terminal reaches them once,
  through the supervisor.
- On Linux each child asks the kernel for SIGTERM when the supervisor dies
  (``PR_SET_PDEATHSIG``), so a killed supervisor never leaves orphans serving.
"""

from __future__ import annotations

import contextlib
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


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before starting again a process that exited on its own: ``first``,
    doubled after each exit that came less than ``stable`` seconds after its start, at most
    ``cap``; an exit after ``stable`` seconds or more starts from ``first`` again."""

    first: float = 0.5
    cap: float = 30.0
    stable: float = 60.0

    def delay(self, previous: float | None, uptime: float) -> float:
        """The wait after a process ran ``uptime`` seconds, when the wait before its latest
        restart was ``previous`` (None: it was never restarted)."""
        if previous is None or uptime >= self.stable:
            return self.first
        return min(previous * 2, self.cap)


BACKOFF = Backoff()


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
    backoff: Backoff = BACKOFF,
) -> int:
    """Run ``children`` (each started as ``command`` gives), restarting one that exits on its
    own after ``backoff``, until a stop signal; returns once every process has exited: 0 when
    each stopped cleanly, 1 otherwise. See the module docstring for the policy."""
    supervision = _Supervision(host, children, command, backoff, _parent_death_signal())
    previous = {signum: signal.signal(signum, supervision.forward) for signum in FORWARDED_SIGNALS}
    try:
        supervision.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        supervision.kill_leftovers()
    log.info("all %d processes stopped", len(children))
    return 1 if supervision.failed else 0


def describe_status(code: int) -> str:
    """An exit status as logged: ``3``, or ``-9 (SIGKILL)`` for a process a signal killed."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{code} ({signal.Signals(-code).name})"
    return str(code)


@dataclass(slots=True)
class _Slot:
    """One child's place in the set: its current process and when to start it again."""

    child: Child
    process: subprocess.Popen[bytes] | None = None
    exited: bool = True
    """The current process's exit has been seen (or there is none yet)."""
    started_at: float = 0.0
    delay: float | None = None
    """The wait before the latest restart; None until the first."""
    restart_at: float | None = None
    """When to start the child again (``time.monotonic``); None when not waiting."""


class _Supervision:
    """The state of one ``supervise`` call: the slots, and whether a stop signal has come.

    ``forward`` runs as a signal handler between any two bytecodes of the main loop, so it only
    sets ``stopping`` and signals processes; a process joins its slot with the forwarded
    signals held (``_start``), so a signal that arrives meanwhile reaches that process too.
    """

    def __init__(
        self,
        host: str,
        children: Sequence[Child],
        command: Callable[[str, Child], list[str]],
        backoff: Backoff,
        die_with_parent: Callable[[], None] | None,
    ) -> None:
        self.host = host
        self.slots = [_Slot(child) for child in children]
        self.command = command
        self.backoff = backoff
        self.die_with_parent = die_with_parent
        self.stopping = False
        self.failed = False

    def forward(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: pass SIGTERM or SIGINT on to every running process; no restarts
        from now on."""
        self.stopping = True
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                process.send_signal(signum)

    def run(self) -> None:
        """Start every child, then watch them until a stop signal has come and all have
        exited; restart a child that exits before that, once its backoff has passed."""
        for slot in self.slots:
            if not self._start(slot):
                break
        while True:
            now = time.monotonic()
            for slot in self.slots:
                process = slot.process
                if not slot.exited and process is not None:
                    code = process.poll()  # its returncode, whoever reaped it
                    if code is not None:
                        slot.exited = True
                        self._on_exit(slot, process.pid, code, now)
                if not self.stopping and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
            if self.stopping and all(slot.exited for slot in self.slots):
                return
            # The supervisor is a plain process with no event loop (the serving processes are
            # its children), so sleeping between polls blocks nothing; signals still interrupt.
            time.sleep(self._pause(now))

    def kill_leftovers(self) -> None:
        """After ``run`` (normally nothing is left; after an error, everything may be):
        terminate and reap any process still running."""
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.terminate()
                slot.process.wait()

    def _start(self, slot: _Slot) -> bool:
        """Start ``slot``'s child unless a stop signal has come (then False). A start that
        fails (no process could be created) is retried after the backoff, like a crash."""
        slot.restart_at = None
        child = slot.child

        def child_setup() -> None:  # in the child, before exec: two system calls
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
            if self.die_with_parent is not None:
                self.die_with_parent()

        held = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            if self.stopping:
                log.info("stopping before process %d started", child.index)
                return False
            try:
                process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                    self.command(self.host, child),
                    env=child_env(os.environ, child),
                    stdin=subprocess.DEVNULL,
                    process_group=0,
                    preexec_fn=child_setup,
                )
            except (OSError, subprocess.SubprocessError) as error:
                self._schedule_restart(slot, uptime=0.0)
                log.error(
                    "process %d could not be started (%s); trying again in %g s",
                    child.index,
                    error,
                    slot.delay,
                )
                return True
            slot.process, slot.exited, slot.started_at = process, False, time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        log.info(
            "process %d (pid %d) serving on http://%s:%d%s",
            child.index,
            process.pid,
            self.host,
            child.http_port,
            f", TCP chat on {child.tcp_port}" if child.tcp_port else "",
        )
        return True

    def _on_exit(self, slot: _Slot, pid: int, code: int, now: float) -> None:
        """A process exited: expected while stopping (unclean unless 0 or the stop signal
        itself); otherwise it is started again after the backoff."""
        child = slot.child
        if self.stopping:
            log.info("process %d exited with status %s", child.index, describe_status(code))
            if code != 0 and -code not in FORWARDED_SIGNALS:
                self.failed = True
            return
        uptime = now - slot.started_at
        self._schedule_restart(slot, uptime)
        log.error(
            "process %d (port %d, pid %d) exited with status %s after %.1f s; "
            "starting it again in %g s",
            child.index,
            child.http_port,
            pid,
            describe_status(code),
            uptime,
            slot.delay,
        )

    def _schedule_restart(self, slot: _Slot, uptime: float) -> None:
        """Set ``slot``'s next start after the backoff for a process that ran ``uptime``."""
        slot.delay = self.backoff.delay(slot.delay, uptime)
        slot.restart_at = time.monotonic() + slot.delay

    def _pause(self, now: float) -> float:
        """How long to sleep: POLL_SECONDS, or less when a restart is due sooner."""
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        return max(0.0, min([POLL_SECONDS, *(at - now for at in due)]))


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when this process dies (None
    elsewhere). libc is loaded here, before any fork, so the hook only makes one call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook

"""The chat fan-out benchmark (issue 5): delivery latency and idle memory of the chat WebSocket.

Not a wrk measurement. Servers run on the server core; the load generator
(``bench/fanout_load.py``, a lean asyncio WebSocket client) runs as its own process on the load
core. In one run, one after the other:

1. idle memory: RSS growth of a fresh mservices process per idle ``/message`` connection;
2. fan-out against mservices (SQLite, history persisted): ``clients`` connections in one room,
   ``rate`` messages a second from ``senders`` of them (mservices allows 10 a second per
   connection) for ``duration_s``;
3. the same against the peer, the seed's broadcast chat in bare Tornado (``bench/chat_peer.py``),
   after its own idle memory (plain Tornado's cost of a WebSocket: the floor mservices adds to);
4. the same across two mservices processes sharing Redis and MariaDB, clients and senders split
   evenly; skipped, with the reason, without a MariaDB URL or a reachable Redis.

Every mservices connection reuses one browser session (one ``POST /login``: the same user in many
tabs) and sends the server's own ``Origin``.

``measure_url`` runs one fan-out against a server somebody else started (``bench/nginx.py``: one
process directly, then nginx in front of two): the login and every WebSocket go through that URL.
"""

import http.client
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import servers
from bench.scenarios import BENCH_PASSWORD, ensure_account
from server.handlers.base import SESSION_COOKIE
from server.realtime.websocket import CHAT_SUBPROTOCOL

REDIS_URL_ENV = "MSERVICES_BENCH_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
USER = "bench-fanout"
ROOM = "fanout"
ROOM_PATH = f"/message?room={ROOM}"
MSERVICES_FRAME_PREFIX = '{"type":"message"'
"""mservices frames are JSON; only ``message`` frames count as deliveries."""
TARGET_PEER_RATIO = 1.0
TARGET_TWO_PROCESS_RATIO = 1.5
TARGET_KB_PER_CONNECTION = 30.0
SATURATED_CPU_SHARE = 0.9
"""A load process using this much of its core while falling behind is the bottleneck."""
KEPT_UP = 0.95
"""Deliveries/s at or above this share of the offered rate count as keeping up."""
HTTP_TIMEOUT_S = 10.0

_REPO_ROOT = Path(__file__).resolve().parent.parent


class FanoutError(RuntimeError):
    """A fan-out step failed; the message says which and why."""


@dataclass(frozen=True)
class Sizes:
    """How hard to push: the issue's figures for a full run, a fraction for ``--smoke``."""

    clients: int
    senders: int
    rate: int
    """Messages a second, all senders together."""
    duration_s: float
    idle_connections: int
    drain_s: float
    """How long receivers may keep catching up after the last send."""

    @property
    def offered_per_s(self) -> int:
        """Deliveries a second the room should see: every message reaches every client."""
        return self.rate * self.clients


FULL = Sizes(clients=1000, senders=10, rate=50, duration_s=5, idle_connections=1000, drain_s=15)
SMOKE = Sizes(clients=100, senders=10, rate=50, duration_s=1, idle_connections=100, drain_s=3)


@dataclass
class FanoutRun:
    """One fan-out measurement (the load process's figures) or why there is none."""

    label: str
    result: dict[str, Any] | None = None
    failure: str | None = None
    bound: str = ""
    """``kept up``, ``server-bound`` or ``generator-bound`` (see ``bottleneck``)."""


@dataclass
class FanoutReport:
    """Everything the fan-out benchmark measured, for the table and the results JSON."""

    sizes: Sizes
    pinning: dict[str, list[str]]
    runs: list[FanoutRun] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    peer_memory: dict[str, Any] | None = None
    """The same idle measurement of the peer: what a bare Tornado WebSocket costs."""
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def run(self, label: str) -> FanoutRun | None:
        """The run called ``label``, if it happened."""
        return next((run for run in self.runs if run.label == label), None)

    def measured(self, label: str) -> bool:
        """Whether the run called ``label`` happened and produced figures."""
        run = self.run(label)
        return run is not None and run.result is not None

    def p99_ratio(self, numerator: str, denominator: str) -> float | None:
        """p99 of run ``numerator`` divided by that of run ``denominator``; None unless both
        delivered every message (a p99 of what happened to arrive in time is only a lower bound,
        and two lower bounds do not make a ratio)."""
        top, bottom = self.run(numerator), self.run(denominator)
        if top is None or bottom is None or top.result is None or bottom.result is None:
            return None
        if not (_complete(top.result) and _complete(bottom.result)):
            return None
        if not top.result["p99_ms"] or not bottom.result["p99_ms"]:
            return None
        return float(top.result["p99_ms"]) / float(bottom.result["p99_ms"])

    def as_json(self) -> dict[str, Any]:
        """The report with its ratios, for ``meta["fanout"]``."""
        data = asdict(self)
        data["offered_deliveries_per_s"] = self.sizes.offered_per_s
        data["p99_ratio_mservices_to_peer"] = self.p99_ratio(MSERVICES, PEER)
        data["p99_ratio_two_processes_to_one"] = self.p99_ratio(TWO_PROCESSES, MSERVICES)
        data["targets"] = {
            "p99_ratio_mservices_to_peer": TARGET_PEER_RATIO,
            "p99_ratio_two_processes_to_one": TARGET_TWO_PROCESS_RATIO,
            "kb_per_idle_connection": TARGET_KB_PER_CONNECTION,
        }
        return data


MSERVICES = "mservices (sqlite)"
PEER = "peer (seed chat)"
TWO_PROCESSES = "mservices x2 (redis)"


def _complete(result: Mapping[str, Any]) -> bool:
    """Whether every message reached every client."""
    return bool(result["expected"]) and result["delivered"] >= result["expected"]


def bottleneck(result: Mapping[str, Any], offered_per_s: float) -> str:
    """Who limited a fan-out: ``kept up`` when deliveries/s reached KEPT_UP of the offered rate
    and every message arrived, else ``generator-bound`` when the load process used at least
    SATURATED_CPU_SHARE of its core, else ``server-bound``."""
    if _complete(result) and result["deliveries_per_s"] >= KEPT_UP * offered_per_s:
        return "kept up"
    if result["load_cpu_share"] >= SATURATED_CPU_SHARE:
        return "generator-bound"
    return "server-bound"


def session_cookie(base_url: str, name: str = USER) -> str:
    """Register ``name`` if need be, log in once through the ``/login`` form (with its XSRF
    cookie and field) and return the ``Cookie`` header value every connection reuses."""
    ensure_account(base_url, name)
    address = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(
        address.hostname or servers.HOST, address.port, timeout=HTTP_TIMEOUT_S
    )
    try:
        connection.request("GET", "/login")
        form = connection.getresponse()
        form.read()
        xsrf = _set_cookie(form, "_xsrf")
        body = urllib.parse.urlencode({"name": name, "pwd": BENCH_PASSWORD, "_xsrf": xsrf})
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"_xsrf={xsrf}",
        }
        connection.request("POST", "/login", body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 302:
            raise FanoutError(f"POST /login answered {answer.status}, not 302")
        return f"{SESSION_COOKIE}={_set_cookie(answer, SESSION_COOKIE)}"
    finally:
        connection.close()


def _set_cookie(response: http.client.HTTPResponse, name: str) -> str:
    """The raw value of cookie ``name`` in ``response``'s Set-Cookie headers, as a browser
    would send it back."""
    for header in response.headers.get_all("Set-Cookie") or []:
        key, _, value = header.split(";", 1)[0].partition("=")
        if key.strip() == name:
            return value.strip()
    raise FanoutError(f"no {name} cookie in the answer to {response.status}")


def endpoint(base_url: str, path: str, cookie: str = "") -> dict[str, Any]:
    """A load-process endpoint for the server at ``base_url``; with a ``cookie`` (mservices)
    it offers the JSON subprotocol, so the frames measured are those of mservices' own page."""
    address = urllib.parse.urlsplit(base_url)
    return {
        "host": address.hostname,
        "port": address.port,
        "path": path,
        "cookie": cookie,
        "protocol": CHAT_SUBPROTOCOL if cookie else "",
    }


def run_load(config: Mapping[str, Any], pinning: servers.Pinning, timeout_s: float) -> Any:
    """Run ``bench.fanout_load`` on the load core with ``config``; return its JSON result."""
    argv = [*pinning.load, sys.executable, "-m", "bench.fanout_load", json.dumps(config)]
    try:
        completed = subprocess.run(
            argv,
            cwd=_REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise FanoutError(f"the load process did not finish within {timeout_s:.0f} s") from error
    lines = completed.stdout.decode("utf-8", "replace").strip().splitlines()
    if completed.returncode != 0 or not lines:
        tail = completed.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise FanoutError(f"the load process exited {completed.returncode}: {' / '.join(tail)}")
    return json.loads(lines[-1])


class _Runner:
    """Runs each step of one fan-out benchmark and records it in the report."""

    def __init__(self, sizes: Sizes, pinning: servers.Pinning) -> None:
        self.sizes = sizes
        self.pinning = pinning
        self.report = FanoutReport(
            sizes, {"server": list(pinning.server), "load": list(pinning.load)}
        )

    def fanout(self, label: str, endpoints: Sequence[dict[str, Any]], prefix: str) -> None:
        """Measure one fan-out against ``endpoints`` and add it to the report."""
        sizes = self.sizes
        config = {
            "mode": "fanout",
            "endpoints": list(endpoints),
            "prefix": prefix,
            "clients": sizes.clients,
            "senders": sizes.senders,
            "rate": sizes.rate,
            "duration_s": sizes.duration_s,
            "drain_s": sizes.drain_s,
        }
        _log(f"fan-out: {label}, {sizes.clients} clients, {sizes.rate} msg/s")
        timeout = 120 + sizes.duration_s + sizes.drain_s
        try:
            result = run_load(config, self.pinning, timeout)
        except FanoutError as error:
            self.fail(FanoutRun(label, failure=str(error)))
            return
        run = FanoutRun(label, result, bound=bottleneck(result, sizes.offered_per_s))
        self.report.runs.append(run)
        if result["connect_failures"] or not result["delivered"]:
            first = result["first_failure"] or "no deliveries"
            self.report.problems.append(
                f"[fanout] {label}: {result['connect_failures']} connections failed ({first})"
            )
        if result["closed_by_server"]:  # 1011 join failed, 1008 rate limit, 4008 slow reader
            self.report.problems.append(
                f"[fanout] {label}: the server closed connections {result['closed_by_server']}"
            )

    def memory(
        self, server: servers.ServerProcess, path: str, cookie: str = ""
    ) -> dict[str, Any] | None:
        """Measure RSS growth per idle WebSocket of ``server`` at ``path``; None on failure
        (recorded as a problem)."""
        count = self.sizes.idle_connections
        config = {
            "mode": "idle",
            "endpoints": [endpoint(server.base_url, path, cookie)],
            "clients": count,
            "warmup": 10,
            "settle_s": 1.0,
            "pid": server.process.pid,
        }
        _log(f"fan-out: idle memory of {count} connections to {server.name}")
        try:
            result: dict[str, Any] = run_load(config, self.pinning, 120)
        except FanoutError as error:
            self.report.problems.append(f"[fanout] idle memory of {server.name}: {error}")
            return None
        return result

    def fail(self, run: FanoutRun) -> None:
        """Record a step that could not be measured."""
        self.report.runs.append(run)
        self.report.problems.append(f"[fanout] {run.label}: {run.failure}")


def measure_url(base_url: str, label: str, sizes: Sizes, pinning: servers.Pinning) -> FanoutReport:
    """One fan-out, called ``label``, against mservices already serving ``base_url`` (a process,
    or a proxy in front of several): the session login and every WebSocket go through that URL.
    A step that fails is a failed run in the report, with its problem, never an exception."""
    runner = _Runner(sizes, pinning)
    try:
        cookie = session_cookie(base_url)
        runner.fanout(label, [endpoint(base_url, ROOM_PATH, cookie)], MSERVICES_FRAME_PREFIX)
    except (RuntimeError, OSError) as error:  # FanoutError, registration, connection refused
        runner.fail(FanoutRun(label, failure=str(error)))
    return runner.report


def run(mysql_url: str | None, redis_url: str | None, smoke: bool) -> FanoutReport:
    """Measure idle memory, mservices and the peer, then two processes when possible."""
    sizes = SMOKE if smoke else FULL
    executable = servers.find_mservices()
    runner = _Runner(sizes, servers.cpu_pinning())
    with tempfile.TemporaryDirectory(prefix="mservices-fanout-") as scratch:
        work = Path(scratch)
        try:
            with servers.mservices_server(
                executable, servers.Target("sqlite"), _dir(work, "sqlite"), runner.pinning
            ) as server:
                cookie = session_cookie(server.base_url)
                runner.report.memory = runner.memory(server, "/message?room=fanout-idle", cookie)
                runner.fanout(
                    MSERVICES,
                    [endpoint(server.base_url, ROOM_PATH, cookie)],
                    MSERVICES_FRAME_PREFIX,
                )
        except (RuntimeError, OSError) as error:  # ServerError, FanoutError, registration
            runner.fail(FanoutRun(MSERVICES, failure=str(error)))
        try:
            with servers.module_server(
                "chat-peer", "bench.chat_peer", _dir(work, "peer"), runner.pinning
            ) as peer:
                runner.report.peer_memory = runner.memory(peer, "/message")
                runner.fanout(PEER, [endpoint(peer.base_url, "/message")], "")
        except servers.ServerError as error:
            runner.fail(FanoutRun(PEER, failure=str(error)))
        reason = _two_process_obstacle(mysql_url, redis_url)
        if reason is not None:
            runner.report.skipped.append(f"{TWO_PROCESSES}: {reason}")
            _log(f"fan-out: skipping {TWO_PROCESSES}: {reason}")
        else:
            assert mysql_url is not None and redis_url is not None
            try:
                with _two_processes(executable, mysql_url, redis_url, work, runner.pinning) as pair:
                    cookie = session_cookie(pair[0].base_url)
                    ends = [endpoint(server.base_url, ROOM_PATH, cookie) for server in pair]
                    runner.fanout(TWO_PROCESSES, ends, MSERVICES_FRAME_PREFIX)
            except (RuntimeError, OSError) as error:  # ServerError, FanoutError, registration
                runner.fail(FanoutRun(TWO_PROCESSES, failure=str(error)))
    return runner.report


@contextmanager
def _two_processes(
    executable: Path, mysql_url: str, redis_url: str, work: Path, pinning: servers.Pinning
) -> Iterator[list[servers.ServerProcess]]:
    """Two mservices processes on the server core sharing MariaDB, Redis (under a fresh key
    prefix) and a cookie secret, so one session cookie is valid on both."""
    shared = {
        "MSERVICES_REDIS_URL": redis_url,
        "MSERVICES_REDIS_PREFIX": f"bench-fanout-{secrets.token_hex(4)}",
        "MSERVICES_COOKIE_SECRET": secrets.token_hex(32),
    }
    target = servers.Target("mariadb", mysql_url)
    with ExitStack() as stack:
        pair = [
            stack.enter_context(
                servers.mservices_server(
                    executable,
                    target,
                    _dir(work, f"mariadb-{index}"),
                    pinning,
                    shared,
                    prepare=index == 1,  # the first process prepared the shared database
                )
            )
            for index in (1, 2)
        ]
        yield pair


def _two_process_obstacle(mysql_url: str | None, redis_url: str | None) -> str | None:
    """Why the two-process run cannot happen, or None when it can."""
    if not mysql_url:
        return "no MariaDB URL (set MSERVICES_BENCH_MYSQL_URL); SQLite cannot be shared safely"
    if not redis_url:
        return f"no Redis URL (set {REDIS_URL_ENV})"
    address = urllib.parse.urlsplit(redis_url)
    try:
        with socket.create_connection(
            (address.hostname or servers.HOST, address.port or 6379), timeout=1.0
        ):
            return None
    except OSError as error:
        return f"Redis at {address.hostname}:{address.port or 6379} is unreachable ({error})"


def _dir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    return path


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _limits(run: FanoutRun, result: Mapping[str, Any], sizes: Sizes) -> str:
    """The bottleneck, plus what was never delivered and what the server closed."""
    text = run.bound
    missing = result["expected"] - result["delivered"]
    if missing > 0 and result["expected"]:
        share = missing / result["expected"]
        text += f"; {share:.0%} undelivered {sizes.drain_s:g} s after the last send"
    closed = result.get("closed_by_server") or {}
    if closed:
        codes = ", ".join(f"{count} with {code}" for code, count in sorted(closed.items()))
        text += f"; server closed {codes}"
    return text


def format_report(report: FanoutReport) -> str:
    """The fan-out table, its ratios and the idle memory line."""
    sizes = report.sizes
    lines = [
        f"chat fan-out: {sizes.clients:,} WebSocket clients in one room, {sizes.rate} msg/s from"
        f" {sizes.senders} senders for {sizes.duration_s:g} s"
        f" (offered {sizes.offered_per_s:,} deliveries/s)",
        "target               | delivered       | deliveries/s |   p50 ms |   p99 ms | load CPU"
        " | limited by",
    ]
    for run in report.runs:
        result = run.result
        if result is None:
            lines.append(f"{run.label:<20} | FAILED: {(run.failure or '').splitlines()[0]}")
            continue
        delivered = f"{result['delivered']:,}/{result['expected']:,}"
        lines.append(
            f"{run.label:<20} | {delivered:>15} | {_number(result['deliveries_per_s'], 0):>12}"
            f" | {_number(result['p50_ms']):>8} | {_number(result['p99_ms']):>8}"
            f" | {result['load_cpu_share']:>7.0%} | {_limits(run, result, sizes)}"
        )
    for title, top, bottom, target in (
        ("p99 mservices / peer", MSERVICES, PEER, TARGET_PEER_RATIO),
        ("p99 2 processes / 1", TWO_PROCESSES, MSERVICES, TARGET_TWO_PROCESS_RATIO),
    ):
        ratio = report.p99_ratio(top, bottom)
        if ratio is not None:
            shown = f"{ratio:.2f}"
        elif report.measured(top) and report.measured(bottom):
            shown = "- (needs both runs complete)"
        else:
            shown = "- (not measured)"
        lines.append(f"{title}: {shown} (target <= {target:.2f})")
    lines.extend(f"skipped {reason}" for reason in report.skipped)
    for title, memory, goal in (
        ("mservices", report.memory, f" (target < {TARGET_KB_PER_CONNECTION:.0f} KB)"),
        ("plain Tornado (peer)", report.peer_memory, ""),
    ):
        if memory is not None:
            lines.append(
                f"idle WebSocket memory, {title}: {memory['connections']:,} connections,"
                f" RSS {memory['rss_before_kb']:,} -> {memory['rss_after_kb']:,} KB,"
                f" {_number(memory['kb_per_connection'])} KB each{goal}"
            )
    return "\n".join(lines)

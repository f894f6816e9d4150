"""nginx in front of mservices: render ``deploy/nginx.conf``, run nginx, and the bench scenario.

``render_conf`` fills the config's placeholders; ``running_nginx`` starts Debian's nginx on it as
a plain subprocess (never the system service) and stops it. The nginx test
(``tests/deploy/test_nginx.py``) uses both, so the config measured, tested and shipped is one
file.

The scenario: ``GET /user/me`` (bearer token) and the chat fan-out of ``bench/fanout.py`` (its
load generator, with the login and every WebSocket going through the URL measured) through nginx
with ``serve --processes 2``, against one process directly; each row's ratio is to the direct
run of its scenario, and a proxied row's note gives the p99 ratio. A fan-out row is in wrk's
shape (``deliveries``): its req/s are deliveries/s. It needs MariaDB
(``MSERVICES_BENCH_MYSQL_URL``) and Redis (``MSERVICES_BENCH_REDIS_URL``, as the fan-out bench;
a unique key prefix per run) and is skipped, with the reason printed, without MariaDB.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import fanout, report, servers, wrk
from bench.report import Row
from bench.scenarios import SCENARIOS, request_headers

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_TEMPLATE = REPO_ROOT / "deploy" / "nginx.conf"
STATIC_DIR = REPO_ROOT / "static"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "nginx")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
SCENARIO_NAME = "GET /user/me (token)"
DIRECT = "1 process, direct"
PROXIED = "nginx, 2 processes"
FANOUT_FULL = fanout.Sizes(
    clients=500, senders=10, rate=50, duration_s=5, idle_connections=0, drain_s=15
)
FANOUT_SMOKE = fanout.Sizes(
    clients=20, senders=4, rate=20, duration_s=1, idle_connections=0, drain_s=3
)


class NginxError(RuntimeError):
    """nginx is missing, its config is invalid, or it did not start."""


def find_nginx() -> str | None:
    """The nginx binary, or None when it is not installed."""
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def render_conf(
    *, listen: str, ports: Sequence[int], state_dir: Path, static_dir: Path = STATIC_DIR
) -> str:
    """``deploy/nginx.conf`` with its placeholders filled; ``ports`` are the app processes'."""
    text = CONF_TEMPLATE.read_text(encoding="utf-8")
    template_ports = sum(1 for index in range(64) if f"@PORT_{index}@" in text)
    if len(ports) != template_ports:
        raise NginxError(f"deploy/nginx.conf lists {template_ports} processes, not {len(ports)}")
    values = {"@LISTEN@": listen, "@STATIC_DIR@": str(static_dir), "@STATE_DIR@": str(state_dir)}
    values.update({f"@PORT_{index}@": str(port) for index, port in enumerate(ports)})
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


@contextmanager
def running_nginx(
    conf_text: str, work_dir: Path, port: int, prefix: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """Run nginx (foreground, its own prefix ``work_dir``) on ``conf_text`` until it listens on
    ``port``; stop it (SIGQUIT: graceful) on exit. ``prefix`` goes before the command, e.g.
    ``taskset -c 0`` to share the servers' core."""
    binary = find_nginx()
    if binary is None:
        raise NginxError("nginx is not installed (apt-get install nginx)")
    conf = work_dir / "nginx.conf"
    conf.write_text(conf_text, encoding="utf-8")
    (work_dir / "logs").mkdir(exist_ok=True)
    directives = f"daemon off; pid {work_dir}/nginx.pid; error_log {work_dir}/error.log notice;"
    if os.geteuid() == 0:
        directives += " user root;"  # workers must read the state dir the caller created
    command = [binary, "-c", str(conf), "-p", str(work_dir), "-g", directives]
    checked = subprocess.run(
        [*command, "-t"], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
    )
    if checked.returncode != 0:
        raise NginxError(f"nginx rejects the config: {checked.stderr.strip()}")
    with (work_dir / "nginx.stderr").open("wb") as stderr:
        process = subprocess.Popen([*prefix, *command], stdin=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for_port(process, port, work_dir)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


def _wait_for_port(process: subprocess.Popen[bytes], port: int, work_dir: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (work_dir / "error.log").read_text(errors="replace")[-2000:]
            raise NginxError(f"nginx exited with status {process.returncode}: {log}")
        try:
            socket.create_connection((servers.HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise NginxError(f"nginx did not listen on port {port} within {START_TIMEOUT_S:.0f} s")


def fanout_scenario(sizes: fanout.Sizes) -> str:
    """The scenario name of a fan-out row."""
    return f"chat fan-out ({sizes.clients:,} clients, {sizes.rate} msg/s)"


def deliveries(result: Mapping[str, Any]) -> wrk.WrkResult:
    """A fan-out's figures (``bench.fanout_load.FanoutResult`` as JSON) in wrk's shape, so they
    share the table: a delivery is a response (req/s are deliveries/s, latencies delivery
    latencies), an undelivered message a timeout, a failed connection a connect error and a
    connection the server closed a read error."""
    delivered = int(result["delivered"])
    per_s = float(result["deliveries_per_s"])
    closed: Mapping[Any, int] = result.get("closed_by_server") or {}
    return wrk.WrkResult(
        requests=delivered,
        duration_s=delivered / per_s if per_s > 0 else 0.0,
        bytes_read=0,
        p50_ms=float(result["p50_ms"] or 0.0),
        p90_ms=float(result.get("p90_ms") or 0.0),
        p99_ms=float(result["p99_ms"] or 0.0),
        max_ms=float(result.get("max_ms") or 0.0),
        connect_errors=int(result.get("connect_failures", 0)),
        read_errors=sum(closed.values()),
        write_errors=0,
        timeout_errors=max(0, int(result["expected"]) - delivered),
        status_errors=0,
    )


def fanout_row(target: str, run: fanout.FanoutRun, sizes: fanout.Sizes) -> Row:
    """The table row of one fan-out run, or of its failure."""
    scenario = fanout_scenario(sizes)
    if run.result is None:
        return Row(target, scenario, failure=run.failure or "no result")
    result = run.result
    note = f"req/s = deliveries/s; {result['delivered']:,}/{result['expected']:,} delivered"
    return Row(target, scenario, deliveries(result), note=f"{note}, {run.bound}")


def p99_ratio(row: Row, direct: Row | None) -> float | None:
    """``row``'s p99 over ``direct``'s; None unless both were measured without a single error
    (the p99 of what arrived is only a lower bound while anything failed)."""
    if direct is None or row.result is None or direct.result is None:
        return None
    if row.result.errors or direct.result.errors or not direct.result.p99_ms:
        return None
    return row.result.p99_ms / direct.result.p99_ms


def compared(row: Row, direct: Row) -> Row:
    """``row`` with its ratio taken to ``direct``'s req/s and, for a proxied row, its p99 ratio
    in the note."""
    baseline = direct.result.requests_per_s if direct.result else None
    if row is direct:
        return replace(row, floor_rps=baseline)
    ratio = p99_ratio(row, direct)
    shown = f"p99 {ratio:.2f}x direct" if ratio is not None else "p99 ratio - (errors)"
    return replace(row, floor_rps=baseline, note="; ".join(filter(None, [shown, row.note])))


def run(
    mysql_url: str | None, redis_url: str, duration_s: int, connections: int, *, smoke: bool
) -> list[Row]:
    """Measure ``GET /user/me`` and the chat fan-out directly on one process and through nginx
    on two; each row's ratio is to the direct run of its scenario. Returns no rows (and says
    why) without MariaDB or nginx."""
    if not mysql_url:
        print("bench: nginx: skipped: set MSERVICES_BENCH_MYSQL_URL (two processes need MariaDB)")
        return []
    if find_nginx() is None:
        print("bench: nginx: skipped: nginx is not installed (.ci/run installs it)")
        return []
    scenario = next(scenario for scenario in SCENARIOS if scenario.name == SCENARIO_NAME)
    wrk_path = wrk.ensure_wrk()
    executable = servers.find_mservices()
    pinning = servers.cpu_pinning()
    load = wrk.LoadSettings(
        duration_s=duration_s,
        connections=connections,
        threads=1 if pinning.enabled else 2,
        prefix=pinning.load,
    )
    sizes = FANOUT_SMOKE if smoke else FANOUT_FULL
    target = servers.Target("mariadb", mysql_url)
    shared = {
        "MSERVICES_REDIS_URL": redis_url,
        "MSERVICES_REDIS_PREFIX": f"bench-{secrets.token_hex(4)}",
        "MSERVICES_XHEADERS": "true",
    }

    def measure(base_url: str, label: str) -> tuple[Row, Row]:
        """The /user/me row and the fan-out row of the server at ``base_url``."""
        print(f"bench: nginx: {label}", file=sys.stderr)
        headers = request_headers(scenario, base_url)
        result = wrk.run_wrk(wrk_path, base_url + scenario.path, load, headers=headers)
        chat = fanout.measure_url(base_url, label, sizes, pinning)
        for problem in chat.problems:
            print(f"bench: nginx: {problem}", file=sys.stderr)
        return Row(label, scenario.name, result), fanout_row(label, chat.runs[0], sizes)

    with tempfile.TemporaryDirectory(prefix="mservices-bench-nginx-") as scratch:
        work = Path(scratch)
        (work / "one").mkdir()
        with servers.mservices_server(executable, target, work / "one", pinning) as one:
            direct = measure(one.base_url, DIRECT)
        (work / "two").mkdir()
        with servers.mservices_server(
            executable, target, work / "two", pinning, extra_env=shared, processes=2
        ) as two:
            first = int(two.base_url.rsplit(":", 1)[1])
            second = servers.ServerProcess(
                two.name, two.process, two.log_dir, f"http://{servers.HOST}:{first + 1}"
            )
            servers.wait_ready(second, "/healthz")
            listen = servers.free_port()
            conf = render_conf(
                listen=f"{servers.HOST}:{listen}", ports=(first, first + 1), state_dir=work
            )
            # nginx shares the server core: the ratio is the proxy hop's cost, not a core's gain
            with running_nginx(conf, work, listen, pinning.server):
                proxied = measure(f"http://{servers.HOST}:{listen}", PROXIED)
    pairs = zip(direct, proxied, strict=True)
    return [row for base, via in pairs for row in (compared(base, base), compared(via, base))]


def format_rows(rows: Sequence[Row]) -> str:
    """The table of the nginx rows (ratio: to the same scenario on one process directly)."""
    return "nginx (ratio to 1 process directly):\n" + report.format_table(rows)


def summary(rows: Sequence[Row]) -> list[Mapping[str, object]]:
    """The rows as plain data for ``last.json``."""
    directs = {row.scenario: row for row in rows if row.target == DIRECT}
    return [
        {
            "target": row.target,
            "scenario": row.scenario,
            "requests_per_s": row.result.requests_per_s if row.result else None,
            "p99_ms": row.result.p99_ms if row.result else None,
            "ratio": row.ratio,
            "p99_ratio": p99_ratio(row, directs.get(row.scenario)),
            "errors": row.result.errors if row.result else None,
            "failure": row.failure,
            "note": row.note,
        }
        for row in rows
    ]

"""nginx in front of mservices: render ``deploy/nginx.conf``, run nginx, and the bench scenario.

``render_conf`` fills the config's placeholders; ``running_nginx`` starts Debian's nginx on it as
a plain subprocess (never the system service) and stops it. The nginx test
(``tests/deploy/test_nginx.py``) uses both, so the config measured, tested and shipped is one
file.

The scenario: ``GET /user/me`` (bearer token) through nginx with ``serve --processes 2``, against
one process directly; each row's ratio is to the direct run. It needs MariaDB
(``MSERVICES_BENCH_MYSQL_URL``) and Redis (``MSERVICES_BENCH_REDIS_URL``, as the fan-out bench;
a unique key prefix per run) and is skipped, with the reason printed, without MariaDB.

Hook for chat fan-out through nginx: ``FANOUT_HOOK`` (below) is where the fan-out measurement
of ``bench/fanout.py`` plugs in: it is called with each base URL (the direct process, then
nginx) and that row's target label, and returns rows to add.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench import report, servers, wrk
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

FanoutHook = Callable[[str, str], list[Row]]
FANOUT_HOOK: FanoutHook | None = None
"""Set to ``f(base_url, target_label) -> rows`` to add chat fan-out, direct and through nginx."""


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
def running_nginx(conf_text: str, work_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run nginx (foreground, its own prefix ``work_dir``) on ``conf_text`` until it listens on
    ``port``; stop it (SIGQUIT: graceful) on exit."""
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
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=stderr)
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


def run(mysql_url: str | None, redis_url: str, duration_s: int, connections: int) -> list[Row]:
    """Measure ``GET /user/me`` directly on one process and through nginx on two; the ratio of
    each row is to the direct run. Returns no rows (and says why) without MariaDB or nginx."""
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
    target = servers.Target("mariadb", mysql_url)
    shared = {
        "MSERVICES_REDIS_URL": redis_url,
        "MSERVICES_REDIS_PREFIX": f"bench-{secrets.token_hex(4)}",
        "MSERVICES_XHEADERS": "true",
    }

    def measure(base_url: str) -> wrk.WrkResult:
        headers = request_headers(scenario, base_url)
        return wrk.run_wrk(wrk_path, base_url + scenario.path, load, headers=headers)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mservices-bench-nginx-") as scratch:
        work = Path(scratch)
        (work / "one").mkdir()
        with servers.mservices_server(executable, target, work / "one", pinning) as one:
            print("bench: nginx: 1 process directly", file=sys.stderr)
            direct = measure(one.base_url)
            rows.append(Row(DIRECT, scenario.name, direct, direct.requests_per_s))
            if FANOUT_HOOK is not None:
                rows.extend(FANOUT_HOOK(one.base_url, DIRECT))
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
            with running_nginx(conf, work, listen):
                proxy_url = f"http://{servers.HOST}:{listen}"
                print("bench: nginx: 2 processes through nginx", file=sys.stderr)
                proxied = measure(proxy_url)
                rows.append(Row(PROXIED, scenario.name, proxied, direct.requests_per_s))
                if FANOUT_HOOK is not None:
                    rows.extend(FANOUT_HOOK(proxy_url, PROXIED))
    return rows


def format_rows(rows: Sequence[Row]) -> str:
    """The table of the nginx rows (ratio: to one process measured directly)."""
    return "nginx (ratio to 1 process directly):\n" + report.format_table(rows)


def summary(rows: Sequence[Row]) -> list[Mapping[str, object]]:
    """The rows as plain data for ``last.json``."""
    return [
        {
            "target": row.target,
            "scenario": row.scenario,
            "requests_per_s": row.result.requests_per_s if row.result else None,
            "p99_ms": row.result.p99_ms if row.result else None,
            "ratio": row.ratio,
        }
        for row in rows
    ]

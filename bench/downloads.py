"""The downloads benchmark (issue 6): is the loop still responsive while many downloads stream?

A local upstream process (``python -m bench.downloads PORT``, on the load core) answers
``/slow`` with 1 MiB after a 2 s wait. One ``mservices serve`` process (SQLite, on the server
core, ``MSERVICES_DOWNLOAD_ALLOW=127.0.0.1`` and a concurrency cap of at least the download count)
is asked through ``POST /api/downloads`` to start ``count`` downloads at once (200; 20 with
``--smoke``), with a token already used once (so its login is cached, as for a real client), by
``bench-downloads``, whom ``bench.seed`` grants ``downloads.use`` (its quotas are raised to
``count``).
While they run, a pinger process (``python -m bench.downloads ping URL``, on the load core, so the
burst of POSTs here never delays its clock) sends ``GET /healthz`` one after the other over one
keep-alive connection and records each latency, until every download has finished;
``GET /api/downloads`` is polled every 0.5 s to know when. Reported: p50, p99 and max of those
latencies (target: p99 under 20 ms), how many downloads were saved, and how long they took. It
measures and reports; it never asserts a timing.
"""

import asyncio
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.web import Application, RequestHandler

from bench import servers
from bench.scenarios import bearer_for

BODY_BYTES = 1024 * 1024
DELAY_S = 2.0
FULL_COUNT = 200
SMOKE_COUNT = 20
TARGET_P99_MS = 20.0
POLL_S = 0.5
FINISH_TIMEOUT_S = 120.0
USER = "bench-downloads"
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DownloadsResult:
    """What one run saw."""

    count: int
    done: int = 0
    failed: int = 0
    refused: int = 0
    seconds: float = 0.0
    samples: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The result for ``results/last.json``."""
        return asdict(self)


class SlowFileHandler(RequestHandler):
    """``GET /slow``: 1 MiB, after a 2 s wait (``asyncio.sleep``: other requests go on)."""

    body = bytes(range(256)) * (BODY_BYTES // 256)

    async def get(self) -> None:
        """Wait, then send the body with its Content-Length."""
        await asyncio.sleep(DELAY_S)
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(self.body)


class ReadyHandler(RequestHandler):
    """``GET /``: the readiness probe of ``servers.module_server``."""

    def get(self) -> None:
        """Answer 200."""
        self.finish("ok")


async def _serve_upstream(port: int) -> None:
    Application([(r"/", ReadyHandler), (r"/slow", SlowFileHandler)]).listen(
        port, address=servers.HOST
    )
    await asyncio.Event().wait()


def _ping(base_url: str) -> None:
    """Time ``GET /healthz`` back to back until stdin closes, then print the latencies (ms)."""
    stop = threading.Event()
    latencies: list[float] = []
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while not stop.is_set():
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            print(json.dumps({"error": f"GET /healthz answered {response.status}"}))
            return
    print(json.dumps({"latencies": latencies}))


def percentile(sorted_values: list[float], share: float) -> float:
    """The ``share`` percentile (nearest rank) of already sorted values."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


async def _drive(
    base_url: str,
    upstream_url: str,
    count: int,
    headers: Mapping[str, str],
    pinning: servers.Pinning,
) -> DownloadsResult:
    """Start ``count`` downloads, time ``/healthz`` until they have all finished."""
    result = DownloadsResult(count=count)
    api = AsyncHTTPClient(force_instance=True, max_clients=count + 10)
    json_headers = {**headers, "Content-Type": "application/json"}

    async def start(number: int) -> int:
        body = json.dumps({"url": upstream_url, "filename": f"file-{number}.bin"})
        request = HTTPRequest(
            base_url + "/api/downloads",
            method="POST",
            headers=json_headers,
            body=body,
            request_timeout=60,
        )
        response = await api.fetch(request, raise_error=False)
        return response.code

    async def watch() -> None:
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            response = await api.fetch(
                base_url + "/api/downloads", headers=headers, raise_error=False, request_timeout=30
            )
            items = json.loads(response.body)["items"] if response.code == 200 else []
            states = [item["state"] for item in items]
            if states and all(state not in ("queued", "running") for state in states):
                result.done = states.count("done")
                result.failed = len(states) - result.done
                return
        result.problems.append(f"downloads unfinished after {FINISH_TIMEOUT_S:.0f} s")

    await api.fetch(base_url + "/api/downloads", headers=headers)  # the token's login is cached
    pinger = await asyncio.create_subprocess_exec(
        *pinning.server,
        sys.executable,
        "-m",
        "bench.downloads",
        "ping",
        base_url,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=_REPO_ROOT,
    )
    began = time.monotonic()
    try:
        await asyncio.sleep(0.2)  # the pinger is connected before the burst
        codes = await asyncio.gather(*(start(number) for number in range(count)))
        result.refused = sum(1 for code in codes if code != 202)
        if result.refused:
            result.problems.append(
                f"{result.refused} downloads were not accepted: {sorted(set(codes))}"
            )
        await watch()
        result.seconds = time.monotonic() - began
    finally:
        output, _ = await asyncio.wait_for(pinger.communicate(b""), 30)
        api.close()
    report = json.loads(output or b"{}")
    latencies: list[float] = sorted(report.get("latencies", []))
    if "error" in report or not latencies:
        result.problems.append(f"pinger: {report.get('error', 'no samples')}")
    result.samples = len(latencies)
    result.p50_ms = statistics.median(latencies) if latencies else 0.0
    result.p99_ms = percentile(latencies, 0.99)
    result.max_ms = latencies[-1] if latencies else 0.0
    return result


def run(smoke: bool) -> DownloadsResult:
    """Start the upstream and mservices, run the downloads, stop both."""
    count = SMOKE_COUNT if smoke else FULL_COUNT
    pinning = servers.cpu_pinning()
    with tempfile.TemporaryDirectory(prefix="mservices-bench-downloads-") as scratch:
        work_dir = Path(scratch)
        extra_env = {
            "MSERVICES_DOWNLOAD_ALLOW": "127.0.0.1",
            "MSERVICES_DOWNLOAD_CONCURRENCY": str(max(count, 200)),
            # one bench user starts them all: its quotas must not be what is measured
            "MSERVICES_DOWNLOAD_USER_CONCURRENCY": str(count),
            "MSERVICES_DOWNLOAD_USER_DAILY": str(count),
            "MSERVICES_DOWNLOAD_DISK_MAX_BYTES": str(2 * count * BODY_BYTES),
            "MSERVICES_DOWNLOAD_TIMEOUT_SECONDS": "120",
        }
        try:
            with (
                servers.module_server(
                    "download-upstream", "bench.downloads", work_dir, servers.Pinning(pinning.load)
                ) as upstream,
                servers.mservices_server(
                    servers.find_mservices(),
                    servers.Target("sqlite"),
                    work_dir,
                    pinning,
                    extra_env=extra_env,
                ) as server,
            ):
                headers = bearer_for(USER)(server.base_url)
                assert isinstance(headers, Mapping), "bearer_for's hook is synchronous"
                return asyncio.run(
                    _drive(server.base_url, upstream.base_url + "/slow", count, headers, pinning)
                )
        except servers.ServerError as error:
            return DownloadsResult(count=count, problems=[f"downloads: {error}"])


def format_result(result: DownloadsResult) -> str:
    """The report block printed after the wrk table."""
    return "\n".join(
        [
            f"downloads: {result.count} concurrent downloads of {BODY_BYTES // 1024} KiB, upstream "
            f"waits {DELAY_S:g} s (target: GET /healthz p99 under {TARGET_P99_MS:.0f} ms)",
            "saved | failed | refused | seconds | /healthz samples | p50 ms | p99 ms | max ms",
            f"{result.done:>5} | {result.failed:>6} | {result.refused:>7} | "
            f"{result.seconds:>7.1f} | {result.samples:>16} | {result.p50_ms:>6.2f} | "
            f"{result.p99_ms:>6.2f} | "
            f"{result.max_ms:>6.2f}",
        ]
    )


if __name__ == "__main__":
    if sys.argv[1] == "ping":
        _ping(sys.argv[2])
    else:
        asyncio.run(_serve_upstream(int(sys.argv[1])))

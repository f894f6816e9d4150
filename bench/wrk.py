"""Drive a URL with wrk and read back what it measured.

wrk is given a generated Lua script that sets the method, headers and body and, in its ``done()``
hook, prints one machine-readable JSON line (request count, duration, latency percentiles, and
every error class). Parsing that line is sturdier than scraping wrk's human summary.
"""

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RESULT_MARKER = "MSERVICES_BENCH_RESULT "
"""Prefix of the JSON line the ``done()`` hook prints."""

_DONE_HOOK = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n%s{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
""".replace("MARKER", RESULT_MARKER)

_INSTALL_TIMEOUT_S = 600.0
_RESULT_KEYS = (
    "requests", "duration_us", "bytes", "p50_us", "p90_us", "p99_us", "max_us",
    "connect", "read", "write", "status", "timeout",
)  # fmt: skip


class WrkError(RuntimeError):
    """wrk is missing and cannot be installed, failed to run, or printed no result."""


@dataclass(frozen=True)
class LoadSettings:
    """How hard and how long to drive a URL, and on which cores."""

    duration_s: int
    connections: int
    threads: int
    timeout_s: int = 5
    prefix: tuple[str, ...] = ()
    """Command prefix for wrk, e.g. ``("taskset", "-c", "1")``."""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured. Latencies are in milliseconds.

    ``status_errors`` counts responses with a status of 400 or more (wrk's "Non-2xx or 3xx");
    the other ``*_errors`` count socket-level failures, which produce no response at all.
    """

    requests: int
    duration_s: float
    bytes_read: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    status_errors: int
    generator_cpu: float | None = None
    """The CPU wrk itself used over the run, as a share of one core (1.0 = a whole core): a
    generator near 1.0 measures itself, not the server. None when it could not be read."""

    @property
    def requests_per_s(self) -> float:
        """Completed responses per second, error statuses included."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        """Connect, read, write and timeout errors together."""
        return self.connect_errors + self.read_errors + self.write_errors + self.timeout_errors

    @property
    def errors(self) -> int:
        """Every failed attempt: socket errors plus error statuses."""
        return self.socket_errors + self.status_errors

    @property
    def error_fraction(self) -> float:
        """The share of attempts that failed, in [0, 1]; 1 when nothing was attempted."""
        attempts = self.requests + self.socket_errors
        return self.errors / attempts if attempts else 1.0


def ensure_wrk() -> str:
    """Return the path of ``wrk``, installing the Debian package first when root can.

    Runs ``apt-get install -y wrk`` and, if that fails, ``apt-get update`` and the install again.
    Raises ``WrkError`` with a one-line reason when wrk is absent and cannot be installed.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkError("wrk is not installed; run `sudo apt-get install -y wrk` and retry")
    if shutil.which("apt-get") is None:
        raise WrkError("wrk is not installed and apt-get is not available to install it")
    print("bench: wrk not found, installing it with apt-get", file=sys.stderr)
    if not _apt_get("install", "-y", "wrk"):
        _apt_get("update")
        _apt_get("install", "-y", "wrk")
    found = shutil.which("wrk")
    if not found:
        raise WrkError("wrk is not installed and `apt-get install -y wrk` did not install it")
    return found


def _apt_get(*args: str) -> bool:
    """Run apt-get non-interactively with its output on stderr; return whether it succeeded."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        completed = subprocess.run(
            ["apt-get", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            stderr=sys.stderr,
            timeout=_INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def lua_string(text: str) -> str:
    """Quote ``text`` as a Lua string literal, escaping every byte that is not plain ASCII."""
    parts = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\':
            parts.append(char)
        else:
            parts.append(f"\\{byte:03d}")
    return '"' + "".join(parts) + '"'


def render_script(method: str, headers: Mapping[str, str], body: str | None) -> str:
    """Return a wrk Lua script that sends this request and reports through ``done()``."""
    lines = [f"wrk.method = {lua_string(method.upper())}"]
    if body is not None:
        lines.append(f"wrk.body = {lua_string(body)}")
    lines.extend(
        f"wrk.headers[{lua_string(name)}] = {lua_string(value)}" for name, value in headers.items()
    )
    return "\n".join(lines) + "\n" + _DONE_HOOK


def parse_output(stdout: str) -> WrkResult:
    """Read the ``done()`` hook's JSON line from wrk's stdout; raise ``WrkError`` if absent."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                raw = json.loads(line[len(RESULT_MARKER) :])
            except json.JSONDecodeError as error:
                raise WrkError(f"wrk printed a malformed result line: {error}") from error
            break
    else:
        raise WrkError("wrk printed no result line; its output was:\n" + _tail(stdout))
    if not isinstance(raw, dict) or any(
        not isinstance(raw.get(key), int | float) for key in _RESULT_KEYS
    ):
        raise WrkError(f"wrk's result line lacks a number for one of {_RESULT_KEYS}")
    ms = 1000.0
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1_000_000,
        bytes_read=int(raw["bytes"]),
        p50_ms=raw["p50_us"] / ms,
        p90_ms=raw["p90_us"] / ms,
        p99_ms=raw["p99_us"] / ms,
        max_ms=raw["max_us"] / ms,
        connect_errors=int(raw["connect"]),
        read_errors=int(raw["read"]),
        write_errors=int(raw["write"]),
        timeout_errors=int(raw["timeout"]),
        status_errors=int(raw["status"]),
    )


def run_wrk(
    wrk_path: str,
    url: str,
    settings: LoadSettings,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
) -> WrkResult:
    """Drive ``url`` with wrk for ``settings.duration_s`` and return what it measured."""
    script = render_script(method, headers or {}, body)
    with tempfile.TemporaryDirectory(prefix="mservices-wrk-") as scratch:
        script_path = Path(scratch) / "request.lua"
        script_path.write_text(script, encoding="utf-8")
        command = wrk_command(wrk_path, url, settings, script_path)
        before, started = _children_cpu_s(), time.monotonic()
        completed = _run(command, timeout_s=settings.duration_s + settings.timeout_s + 30)
        cpu_s, wall_s = _children_cpu_s() - before, time.monotonic() - started
    if completed.returncode != 0:
        raise WrkError(
            f"wrk exited with status {completed.returncode}:\n"
            + _tail(completed.stderr or completed.stdout)
        )
    result = parse_output(completed.stdout)
    return dataclasses.replace(result, generator_cpu=cpu_s / wall_s if wall_s > 0 else None)


def _children_cpu_s() -> float:
    """User plus system CPU seconds of this process's reaped children (wrk, once it exits; a
    background wrk is reaped only after the measured run, so it is not counted there)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_command(wrk_path: str, url: str, settings: LoadSettings, script: Path) -> list[str]:
    """The wrk command line for ``settings`` with the request script ``script``."""
    return [
        *settings.prefix,
        wrk_path,
        "--threads", str(settings.threads),
        "--connections", str(settings.connections),
        "--duration", f"{settings.duration_s}s",
        "--timeout", f"{settings.timeout_s}s",
        "--script", str(script),
        url,
    ]  # fmt: skip


class BackgroundWrk:
    """A wrk run in a child process, driving load while something else is measured."""

    def __init__(
        self,
        wrk_path: str,
        url: str,
        settings: LoadSettings,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
    ) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="mservices-wrk-bg-")
        script_path = Path(self._scratch.name) / "request.lua"
        script_path.write_text(render_script(method, headers or {}, body), encoding="utf-8")
        self._timeout_s = settings.duration_s + settings.timeout_s + 30
        command = wrk_command(wrk_path, url, settings, script_path)
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as error:
            self._scratch.cleanup()
            raise WrkError(f"cannot run wrk: {error}") from error

    def result(self) -> WrkResult:
        """Wait for the run to end and return what it measured."""
        try:
            stdout, stderr = self._process.communicate(timeout=self._timeout_s)
        except subprocess.TimeoutExpired as error:
            self._process.kill()
            self._process.communicate()
            raise WrkError(f"background wrk did not finish within {self._timeout_s} s") from error
        finally:
            self._scratch.cleanup()
        if self._process.returncode != 0:
            raise WrkError(f"background wrk exited {self._process.returncode}:\n" + _tail(stderr))
        return parse_output(stdout)


def _run(command: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` capturing text output; turn a hang or a missing binary into ``WrkError``."""
    try:
        return subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise WrkError(f"wrk did not finish within {timeout_s:.0f} s") from error
    except OSError as error:
        raise WrkError(f"cannot run wrk: {error}") from error


def _tail(text: str, lines: int = 15) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])

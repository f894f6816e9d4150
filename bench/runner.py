"""Run one benchmark: measure the floor once, then every scenario against every target.

Servers are started and stopped here, one at a time, so the load generator never competes with a
server other than the one being measured. A failure is recorded on its row and in
``Outcome.problems``; the run carries on with the next scenario or target where it can.
"""

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import servers, wrk
from bench.report import Row
from bench.scenarios import Scenario, request_headers

FLOOR_TARGET = "floor"
FLOOR_SCENARIO = "GET / (bare Tornado)"


@dataclass(frozen=True)
class RunConfig:
    """What to measure and how hard: chosen by the command line."""

    duration_s: int
    connections: int
    warmup_s: int
    scenarios: tuple[Scenario, ...]
    targets: tuple[servers.Target, ...]


@dataclass
class Outcome:
    """The rows of a run (the floor's first), its metadata, and every problem that fails it."""

    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether everything was measured and no row is flagged."""
        return not self.problems

    def add(self, row: Row) -> None:
        """Append ``row``; a failed or flagged row also becomes a problem."""
        self.rows.append(row)
        if row.failure is not None:
            self.problems.append(f"[{row.target}] {row.scenario}: {row.failure}")
        elif row.flag is not None:
            self.problems.append(f"[{row.target}] {row.scenario}: {row.flag}")


def log(message: str) -> None:
    """Print a progress line to stderr, keeping stdout for the table."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(config: RunConfig) -> Outcome:
    """Measure the floor, then each target's scenarios, and return every row.

    Raises ``wrk.WrkError`` when wrk is unavailable or fails on the floor, and
    ``servers.ServerError`` when the mservices command is missing or the floor will not start:
    without a floor there is nothing to compare against.
    """
    bench = _Bench.prepare(config)
    outcome = Outcome(meta=bench.meta())
    with tempfile.TemporaryDirectory(prefix="mservices-bench-") as scratch:
        work = Path(scratch)
        outcome.add(bench.measure_floor(_subdir(work, FLOOR_TARGET)))
        floor_rps = outcome.rows[0].result.requests_per_s if outcome.rows[0].result else None
        for target in config.targets:
            bench.run_target(outcome, target, _subdir(work, target.name), floor_rps)
    return outcome


@dataclass(frozen=True)
class _Bench:
    """Everything fixed for one run: the tools found, the cores chosen, the load settings."""

    config: RunConfig
    wrk_path: str
    executable: Path
    pinning: servers.Pinning
    settings: wrk.LoadSettings

    @classmethod
    def prepare(cls, config: RunConfig) -> "_Bench":
        """Find wrk (installing it if need be) and mservices, and choose cores and threads."""
        wrk_path = wrk.ensure_wrk()
        executable = servers.find_mservices()
        pinning = servers.cpu_pinning()
        # One wrk thread per core it may use: with pinning that is exactly one.
        threads = 1 if pinning.enabled else min(config.connections, 2)
        settings = wrk.LoadSettings(
            duration_s=config.duration_s,
            connections=config.connections,
            threads=threads,
            prefix=pinning.load,
        )
        return cls(config, wrk_path, executable, pinning, settings)

    def meta(self) -> dict[str, object]:
        """Describe the run's settings for the JSON report."""
        return {
            "duration_s": self.config.duration_s,
            "warmup_s": self.config.warmup_s,
            "connections": self.config.connections,
            "threads": self.settings.threads,
            "pinning": {"server": list(self.pinning.server), "load": list(self.pinning.load)},
            "cpu_count": os.cpu_count(),
            "targets": [target.name for target in self.config.targets],
            "scenarios": [scenario.name for scenario in self.config.scenarios],
        }

    def measure_floor(self, work_dir: Path) -> Row:
        """Start the floor server, drive it, stop it, and return its row (ratio 1 by definition)."""
        with servers.floor_server(work_dir, self.pinning) as floor:
            log(f"measuring the floor for {self.config.duration_s} s")
            result = self.drive(floor.base_url + "/", "GET", {}, None)
        return Row(FLOOR_TARGET, FLOOR_SCENARIO, result, result.requests_per_s)

    def run_target(
        self, outcome: Outcome, target: servers.Target, work_dir: Path, floor_rps: float | None
    ) -> None:
        """Start mservices for ``target``, measure every scenario against it, and stop it."""
        log(f"starting mservices for target {target.name}")
        try:
            with servers.mservices_server(
                self.executable, target, work_dir, self.pinning
            ) as server:
                for scenario in self.config.scenarios:
                    if not server.alive:
                        reason = f"mservices exited; stderr tail:\n{server.stderr_tail()}"
                        outcome.add(Row(target.name, scenario.name, failure=reason))
                        continue
                    log(f"[{target.name}] {scenario.name} for {self.config.duration_s} s")
                    outcome.add(self.measure(server.base_url, scenario, target.name, floor_rps))
        except servers.ServerError as error:
            outcome.add(Row(target.name, "(start-up)", failure=str(error)))

    def measure(
        self, base_url: str, scenario: Scenario, target: str, floor_rps: float | None
    ) -> Row:
        """Run ``scenario``'s setup hook and its load; return the measured row or a failed one."""
        try:
            headers = request_headers(scenario, base_url)
        except Exception as error:  # a hook may raise anything; the run must go on
            failure = f"setup failed: {type(error).__name__}: {error}"
            return Row(target, scenario.name, failure=failure)
        background = self.start_background(base_url, scenario)
        try:
            result = self.drive(
                base_url + scenario.path,
                scenario.method,
                headers,
                scenario.body,
                connections=scenario.connections,
            )
        except wrk.WrkError as error:
            if background is not None:
                background.result()
            return Row(target, scenario.name, failure=str(error))
        note = ""
        if background is not None and scenario.background is not None:
            try:
                extra = background.result()
            except wrk.WrkError as error:
                return Row(target, scenario.name, result, floor_rps, failure=str(error))
            label = scenario.background.label
            note = f"{label}/s {extra.requests_per_s:,.1f}, {label} p99 {extra.p99_ms:.0f} ms"
            if extra.errors:
                note += f", {label} errors {extra.errors}"
        return Row(target, scenario.name, result, floor_rps, note=note)

    def start_background(self, base_url: str, scenario: Scenario) -> wrk.BackgroundWrk | None:
        """Start the scenario's background load, if any, for its warm-up plus measurement."""
        load = scenario.background
        if load is None:
            return None
        settings = replace(
            self.settings,
            duration_s=self.config.duration_s + self.config.warmup_s + 1,
            connections=load.connections,
            timeout_s=max(self.settings.timeout_s, 15),
        )
        return wrk.BackgroundWrk(
            self.wrk_path, base_url + load.path, settings, load.method, load.headers, load.body
        )

    def drive(
        self,
        url: str,
        method: str,
        headers: Mapping[str, str],
        body: str | None,
        *,
        connections: int | None = None,
    ) -> wrk.WrkResult:
        """Warm ``url`` up (when configured), then measure it with the run's load settings."""
        settings = self.settings
        if connections is not None:
            settings = replace(settings, connections=connections)
        if self.config.warmup_s > 0:
            warmup = replace(settings, duration_s=self.config.warmup_s)
            wrk.run_wrk(self.wrk_path, url, warmup, method, headers, body)
        return wrk.run_wrk(self.wrk_path, url, settings, method, headers, body)


def _subdir(parent: Path, name: str) -> Path:
    """Create and return the directory ``parent/name``."""
    path = parent / name
    path.mkdir()
    return path

"""Turn measurements into the plain-text table on stdout and the JSON file in ``bench/results``."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.wrk import WrkResult

MOSTLY_ERRORS = 0.5
"""A scenario is flagged when more than this share of its attempts failed."""

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LAST_RESULTS = RESULTS_DIR / "last.json"
_GITIGNORE = "*\n!.gitignore\n"
_COLUMNS = (
    "target",
    "scenario",
    "req/s",
    "p99 ms",
    "ratio to floor",
    "wrk cpu",
    "errors",
    "note",
)
_RIGHT_ALIGNED = frozenset({"req/s", "p99 ms", "ratio to floor", "wrk cpu"})


@dataclass(frozen=True)
class Row:
    """One (target, scenario) outcome: a measurement, or the reason there is none."""

    target: str
    scenario: str
    result: WrkResult | None = None
    floor_rps: float | None = None
    failure: str | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """This row's requests/s divided by the floor's, when both are known."""
        if self.result is None or not self.floor_rps:
            return None
        return self.result.requests_per_s / self.floor_rps

    @property
    def flag(self) -> str | None:
        """Why this row must not be read as a valid measurement, or None if it can be."""
        if self.failure is not None:
            return "FAILED"
        if self.result is None or self.result.requests == 0:
            return "NO RESPONSES"
        if self.result.error_fraction > MOSTLY_ERRORS:
            return "MOSTLY ERRORS"
        return None


def format_errors(row: Row) -> str:
    """Describe a row's errors in a few words: count, share, kinds, and any flag."""
    if row.failure is not None:
        return f"FAILED: {row.failure.splitlines()[0] if row.failure else 'unknown'}"
    result = row.result
    assert result is not None
    if result.errors == 0 and row.flag is None:
        return "0"
    kinds = {
        "status": result.status_errors,
        "connect": result.connect_errors,
        "read": result.read_errors,
        "write": result.write_errors,
        "timeout": result.timeout_errors,
    }
    detail = ", ".join(f"{kind} {count}" for kind, count in kinds.items() if count)
    text = f"{result.errors} ({result.error_fraction:.1%})"
    if detail:
        text += f" [{detail}]"
    return f"{text} {row.flag}" if row.flag else text


def _cells(row: Row) -> tuple[str, ...]:
    """Return the table cells of ``row``, in ``_COLUMNS`` order."""
    result = row.result
    ratio = row.ratio
    return (
        row.target,
        row.scenario,
        f"{result.requests_per_s:,.0f}" if result else "-",
        f"{result.p99_ms:.2f}" if result else "-",
        f"{ratio:.2f}" if ratio is not None else "-",
        f"{result.generator_cpu:.0%}" if result and result.generator_cpu is not None else "-",
        format_errors(row),
        row.note,
    )


def format_table(rows: Sequence[Row]) -> str:
    """Render ``rows`` as an aligned, pipe-separated plain-text table with a header line."""
    body = [_cells(row) for row in rows]
    widths = [max(len(cells[i]) for cells in [_COLUMNS, *body]) for i in range(len(_COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if column in _RIGHT_ALIGNED else cell.ljust(width)
            for column, cell, width in zip(_COLUMNS, cells, widths, strict=True)
        )
        return " | ".join(padded).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([line(_COLUMNS), rule, *(line(cells) for cells in body)])


def row_to_dict(row: Row) -> dict[str, Any]:
    """Return ``row`` as JSON-ready data, with every error class broken out."""
    data: dict[str, Any] = {
        "target": row.target,
        "scenario": row.scenario,
        "ratio_to_floor": row.ratio,
        "flag": row.flag,
        "failure": row.failure,
        "note": row.note,
    }
    result = row.result
    if result is not None:
        data |= {
            "requests_per_s": result.requests_per_s,
            "p50_ms": result.p50_ms,
            "p90_ms": result.p90_ms,
            "p99_ms": result.p99_ms,
            "max_ms": result.max_ms,
            "requests": result.requests,
            "duration_s": result.duration_s,
            "generator_cpu": result.generator_cpu,
            "bytes_read": result.bytes_read,
            "errors": {
                "total": result.errors,
                "fraction": result.error_fraction,
                "status": result.status_errors,
                "connect": result.connect_errors,
                "read": result.read_errors,
                "write": result.write_errors,
                "timeout": result.timeout_errors,
            },
        }
    return data


def write_json(rows: Sequence[Row], meta: Mapping[str, Any], path: Path = LAST_RESULTS) -> Path:
    """Write the run's metadata and rows to ``path`` (default ``bench/results/last.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gitignore = path.parent / ".gitignore"
    if path.parent == RESULTS_DIR and not gitignore.exists():
        gitignore.write_text(_GITIGNORE, encoding="utf-8")
    document = {**meta, "rows": [row_to_dict(row) for row in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path

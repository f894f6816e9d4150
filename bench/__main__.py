"""Command line of the benchmark harness: ``python -m bench [--smoke] [options]``.

Prints the results table on stdout (progress and problems go to stderr), writes
``bench/results/last.json``, and exits 0 when everything was measured, 1 when something broke
(a server did not start, wrk is unavailable, a scenario failed or answered mostly errors), and 2
on a usage error. It never fails because something was slow.
"""

import argparse
import datetime
import os
import platform
import sys
from collections.abc import Sequence

import tornado

from bench import downloads, fanout, nginx, report, runner, servers, tree_build, wrk
from bench.scenarios import SCENARIOS, select

MYSQL_URL_ENV = "MSERVICES_BENCH_MYSQL_URL"
FULL = {"duration": 10, "connections": 64, "warmup": 1}
SMOKE = {"duration": 2, "connections": 8, "warmup": 0}
EXTRA_MEASUREMENTS = ("tree", "fanout", "nginx", "downloads")
"""Measurements printed after the wrk table; ``--only`` may name them alone."""


def _positive(text: str) -> int:
    """Parse a strictly positive integer option value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for the harness's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure mservices against a bare Tornado floor with wrk, on loopback.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a quick run to keep the harness working: {SMOKE['duration']} s per scenario,"
        f" {SMOKE['connections']} connections, no warm-up",
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        metavar="SECONDS",
        help=f"seconds per scenario (default {FULL['duration']}, smoke {SMOKE['duration']})",
    )
    parser.add_argument(
        "--connections",
        type=_positive,
        metavar="N",
        help=f"open connections (default {FULL['connections']}, smoke {SMOKE['connections']})",
    )
    parser.add_argument(
        "--only", metavar="SUBSTRING", help="run only scenarios whose name contains SUBSTRING"
    )
    parser.add_argument(
        "--mysql-url",
        metavar="URL",
        help=f"also measure against this MariaDB database (overrides ${MYSQL_URL_ENV});"
        " the database must already exist",
    )
    return parser


def build_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> runner.RunConfig:
    """Turn parsed options into a run configuration; exit 2 if no scenario matches ``--only``."""
    defaults = SMOKE if args.smoke else FULL
    scenarios = select(SCENARIOS, args.only)
    if not scenarios and not any(args.only.casefold() in name for name in EXTRA_MEASUREMENTS):
        names = ", ".join(scenario.name for scenario in SCENARIOS)
        parser.error(f"--only {args.only!r} matches no scenario (have: {names})")
    targets = [servers.Target("sqlite")]
    mysql_url = args.mysql_url if args.mysql_url is not None else os.environ.get(MYSQL_URL_ENV)
    if mysql_url:
        targets.append(servers.Target("mariadb", mysql_url))
    return runner.RunConfig(
        duration_s=args.duration or defaults["duration"],
        connections=args.connections or defaults["connections"],
        warmup_s=defaults["warmup"],
        scenarios=tuple(scenarios),
        targets=tuple(targets),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark described by ``argv``; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = build_config(args, parser)
    started = datetime.datetime.now(datetime.UTC)
    try:
        # Only the extra measurements were asked for: no floor, no wrk.
        outcome = runner.run(config) if config.scenarios else runner.Outcome()
    except (wrk.WrkError, servers.ServerError) as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    meta = {
        "started_at": started.isoformat(timespec="seconds"),
        "mode": "smoke" if args.smoke else "full",
        "ok": outcome.ok,
        "problems": outcome.problems,
        "python": platform.python_version(),
        "tornado": tornado.version,
        **outcome.meta,
    }
    if outcome.rows:
        print(report.format_table(outcome.rows))
    mysql_url = next((t.database_url for t in config.targets if t.database_url), None)
    if not args.only or "tree" in args.only:
        runs = 5 if args.smoke else 50
        tree_results = tree_build.run(mysql_url, runs)
        print()
        print(tree_build.format_results(tree_results))
        meta["tree_build"] = [vars(result) for result in tree_results]
    if not args.only or args.only.casefold() in "fanout":
        redis_url = os.environ.get(fanout.REDIS_URL_ENV, fanout.DEFAULT_REDIS_URL)
        fanout_report = fanout.run(mysql_url, redis_url, args.smoke)
        print()
        print(fanout.format_report(fanout_report))
        meta["fanout"] = fanout_report.as_json()
        outcome.problems.extend(fanout_report.problems)
        meta["ok"] = outcome.ok
    if not args.only or args.only.casefold() in "nginx":
        try:
            nginx_rows = nginx.run(
                mysql_url,
                os.environ.get(fanout.REDIS_URL_ENV, fanout.DEFAULT_REDIS_URL),
                config.duration_s,
                config.connections,
                smoke=args.smoke,
            )
        except (wrk.WrkError, servers.ServerError, nginx.NginxError) as error:
            nginx_rows = []
            outcome.problems.append(f"nginx: {error}")
        if nginx_rows:
            print()
            print(nginx.format_rows(nginx_rows))
        meta["nginx"] = nginx.summary(nginx_rows)
        meta["ok"] = outcome.ok
    if not args.only or args.only.casefold() in "downloads":
        downloads_result = downloads.run(args.smoke)
        print()
        print(downloads.format_result(downloads_result))
        meta["downloads"] = downloads_result.as_json()
        outcome.problems.extend(downloads_result.problems)
        meta["ok"] = outcome.ok
    path = report.write_json(outcome.rows, meta)
    print(f"bench: results written to {path}", file=sys.stderr)
    for problem in outcome.problems:
        print(f"bench: problem: {problem}", file=sys.stderr)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The fan-out benchmark's verdicts and report from given figures, and one fan-out against a
URL (a closed port: the failure is reported, not raised)."""

from typing import Any

from bench import servers
from bench.fanout import (
    MSERVICES,
    PEER,
    SMOKE,
    FanoutReport,
    FanoutRun,
    bottleneck,
    format_report,
    measure_url,
)


def fanout_result(**overrides: Any) -> dict[str, Any]:
    """A load process's fan-out figures (JSON, as ``run_load`` returns them), with overrides."""
    result: dict[str, Any] = {
        "delivered": 1000,
        "expected": 1000,
        "deliveries_per_s": 5000.0,
        "load_cpu_share": 0.3,
        "connect_failures": 0,
        "closed_by_server": {},
        "p50_ms": 2.0,
        "p99_ms": 10.0,
    }
    result.update(overrides)
    return result


def test_a_run_that_delivered_everything_at_the_offered_rate_kept_up() -> None:
    assert bottleneck(fanout_result(), 5000) == "kept up"


def test_a_run_falling_behind_with_a_busy_load_core_is_generator_bound() -> None:
    assert bottleneck(fanout_result(deliveries_per_s=2000.0, load_cpu_share=0.97), 5000) == (
        "generator-bound"
    )


def test_a_run_falling_behind_with_an_idle_load_core_is_server_bound() -> None:
    assert bottleneck(fanout_result(delivered=900, load_cpu_share=0.4), 5000) == "server-bound"


def test_the_report_gives_the_p99_ratio_to_the_peer() -> None:
    report = FanoutReport(SMOKE, {"server": [], "load": []})
    report.runs.append(FanoutRun(MSERVICES, fanout_result(p99_ms=30.0), bound="kept up"))
    report.runs.append(FanoutRun(PEER, fanout_result(p99_ms=20.0), bound="kept up"))
    assert report.p99_ratio(MSERVICES, PEER) == 1.5
    assert report.as_json()["p99_ratio_mservices_to_peer"] == 1.5
    assert "p99 mservices / peer: 1.50" in format_report(report)


def test_a_failed_run_has_no_ratio_and_says_why() -> None:
    report = FanoutReport(SMOKE, {"server": [], "load": []})
    report.runs.append(FanoutRun(MSERVICES, failure="mservices did not start"))
    report.runs.append(FanoutRun(PEER, fanout_result()))
    assert report.p99_ratio(MSERVICES, PEER) is None
    assert "FAILED: mservices did not start" in format_report(report)


def test_undelivered_messages_and_server_closes_are_reported() -> None:
    report = FanoutReport(SMOKE, {"server": [], "load": []})
    result = fanout_result(delivered=750, closed_by_server={"1011": 3})
    report.runs.append(FanoutRun(MSERVICES, result, bound="server-bound"))
    table = format_report(report)
    assert "server-bound; 25% undelivered 3 s after the last send" in table
    assert "server closed 3 with 1011" in table


def test_there_is_no_p99_ratio_while_a_run_missed_deliveries() -> None:
    report = FanoutReport(SMOKE, {"server": [], "load": []})
    report.runs.append(FanoutRun(MSERVICES, fanout_result(delivered=10, p99_ms=30.0)))
    report.runs.append(FanoutRun(PEER, fanout_result(p99_ms=20.0)))
    assert report.p99_ratio(MSERVICES, PEER) is None
    assert "p99 mservices / peer: - (needs both runs complete)" in format_report(report)


def test_a_ratio_without_its_runs_is_not_measured() -> None:
    report = FanoutReport(SMOKE, {"server": [], "load": []})
    report.runs.append(FanoutRun(MSERVICES, fanout_result()))
    assert "p99 2 processes / 1: - (not measured)" in format_report(report)


def _memory(kb_each: float) -> dict[str, Any]:
    return {
        "connections": 100,
        "rss_before_kb": 1000,
        "rss_after_kb": 1000 + int(kb_each * 100),
        "kb_per_connection": kb_each,
    }


def test_idle_memory_is_reported_for_mservices_and_for_plain_tornado() -> None:
    report = FanoutReport(SMOKE, {"server": [], "load": []})
    report.memory, report.peer_memory = _memory(18.0), _memory(12.5)

    table = format_report(report)

    assert "idle WebSocket memory, mservices: 100 connections, RSS 1,000 -> 2,800 KB" in table
    assert "18.0 KB each (target < 30 KB)" in table
    assert "idle WebSocket memory, plain Tornado (peer): 100 connections" in table
    assert "12.5 KB each" in table
    assert report.as_json()["peer_memory"]["kb_per_connection"] == 12.5


def test_a_missing_memory_measurement_prints_no_line() -> None:
    report = FanoutReport(SMOKE, {"server": [], "load": []})
    report.peer_memory = _memory(12.5)

    table = format_report(report)

    assert "memory, mservices" not in table
    assert "memory, plain Tornado (peer)" in table


def test_a_fan_out_against_a_url_nobody_serves_is_a_failed_run() -> None:
    base_url = f"http://{servers.HOST}:{servers.free_port()}"

    report = measure_url(base_url, MSERVICES, SMOKE, servers.Pinning())

    assert [run.label for run in report.runs] == [MSERVICES]
    assert report.runs[0].result is None
    assert "Connection refused" in (report.runs[0].failure or "")
    assert report.problems == [f"[fanout] {MSERVICES}: {report.runs[0].failure}"]

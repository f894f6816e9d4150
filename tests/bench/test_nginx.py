"""The nginx bench's rows: fan-out figures in wrk's shape, ratios to the direct process, the
smoke and full sizes, the skip without MariaDB, and a real fan-out through nginx."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench import fanout, servers
from bench.nginx import (
    DIRECT,
    FANOUT_FULL,
    FANOUT_SMOKE,
    PROXIED,
    compared,
    deliveries,
    fanout_row,
    find_nginx,
    format_rows,
    render_conf,
    run,
    running_nginx,
    summary,
)
from bench.report import Row
from bench.seed import seed_granted_users
from bench.wrk import WrkResult
from server.services import Services
from tests.bench.test_fanout import fanout_result
from tests.conftest import REQUIRE_SERVICES, Client

TINY = fanout.Sizes(clients=4, senders=2, rate=10, duration_s=0.5, idle_connections=0, drain_s=5)


def _wrk(p99_ms: float, requests: int = 1000, status_errors: int = 0) -> WrkResult:
    return WrkResult(requests, 1.0, 0, 1.0, 2.0, p99_ms, p99_ms, 0, 0, 0, 0, status_errors)


def test_a_fan_out_counts_deliveries_as_responses() -> None:
    result = deliveries(fanout_result(delivered=4000, deliveries_per_s=2000.0, p99_ms=12.5))
    assert result.requests_per_s == 2000.0
    assert result.p99_ms == 12.5
    assert result.errors == 0


def test_undelivered_messages_failed_connections_and_closes_are_errors() -> None:
    result = deliveries(
        fanout_result(delivered=700, connect_failures=2, closed_by_server={"1008": 3})
    )
    assert result.timeout_errors == 300
    assert result.connect_errors == 2
    assert result.read_errors == 3
    assert result.errors == 305


def test_a_fan_out_that_delivered_nothing_has_no_responses() -> None:
    row = fanout_row(DIRECT, fanout.FanoutRun(DIRECT, fanout_result(delivered=0)), TINY)
    assert row.flag == "NO RESPONSES"


def test_a_failed_fan_out_is_a_failed_row_with_its_reason() -> None:
    row = fanout_row(PROXIED, fanout.FanoutRun(PROXIED, failure="POST /login answered 502"), TINY)
    assert row.failure == "POST /login answered 502"
    assert "FAILED: POST /login answered 502" in format_rows([row])


def test_a_proxied_row_gives_its_throughput_and_p99_ratios_to_the_direct_one() -> None:
    direct = Row(DIRECT, "s", _wrk(10.0, requests=1000))
    proxied = compared(Row(PROXIED, "s", _wrk(25.0, requests=500), note="kept up"), direct)
    assert proxied.ratio == 0.5
    assert proxied.note == "p99 2.50x direct; kept up"
    assert compared(direct, direct).ratio == 1.0
    rows = [compared(direct, direct), proxied]
    assert [entry["p99_ratio"] for entry in summary(rows)] == [1.0, 2.5]
    assert "p99 2.50x direct" in format_rows(rows)


def test_there_is_no_p99_ratio_while_either_run_had_errors() -> None:
    direct = Row(DIRECT, "s", _wrk(10.0, status_errors=1))
    proxied = compared(Row(PROXIED, "s", _wrk(25.0)), direct)
    assert proxied.note == "p99 ratio - (errors)"
    assert summary([direct, proxied])[1]["p99_ratio"] is None


def test_the_smoke_fan_out_is_smaller_than_the_full_one() -> None:
    assert FANOUT_SMOKE.clients < FANOUT_FULL.clients


def test_without_mariadb_the_bench_is_skipped_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(None, "redis://127.0.0.1:6379", 2, 8, smoke=True) == []
    assert "skipped: set MSERVICES_BENCH_MYSQL_URL" in capsys.readouterr().out


async def test_a_fan_out_through_nginx_reaches_every_client(
    client: Client, services: Services, tmp_path: Path
) -> None:
    if find_nginx() is None:
        reason = "fan-out through nginx needs Debian's nginx (.ci/run installs it)"
        if REQUIRE_SERVICES:
            pytest.fail(f"MSERVICES_TEST_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    async with services.sessions() as session, session.begin():  # as bench.seed does
        await seed_granted_users(session, services.passwords)
    app_port = int(client.base_url.rsplit(":", 1)[1])
    listen = servers.free_port()
    conf = render_conf(listen=f"127.0.0.1:{listen}", ports=(app_port, app_port), state_dir=tmp_path)
    with running_nginx(conf, tmp_path, listen):
        report = await asyncio.to_thread(
            fanout.measure_url, f"http://127.0.0.1:{listen}", PROXIED, TINY, servers.Pinning()
        )
    assert report.problems == []
    result: dict[str, Any] | None = report.runs[0].result
    assert result is not None
    assert result["clients"] == TINY.clients
    assert result["sent"] > 0
    assert result["delivered"] == result["expected"] == result["sent"] * TINY.clients
    # every upgrade and the login went through nginx, none straight to the app
    log = (tmp_path / "access.log").read_text()
    assert log.count('GET /message?room=fanout HTTP/1.1" 101') == TINY.clients
    assert 'POST /login HTTP/1.1" 302' in log

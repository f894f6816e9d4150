"""The wrk table reports the load generator's own CPU share beside each measurement."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from tornado.web import Application, RequestHandler

from bench.report import Row, format_table
from bench.wrk import LoadSettings, WrkResult, run_wrk
from tests.conftest import REQUIRE_SERVICES, serve_app


def result(generator_cpu: float | None) -> WrkResult:
    """A measurement of 1,000 responses in one second."""
    return WrkResult(1000, 1.0, 0, 1.0, 2.0, 3.0, 4.0, 0, 0, 0, 0, 0, generator_cpu)


def test_the_table_shows_the_generators_cpu_share_or_a_dash() -> None:
    table = format_table(
        [Row("floor", "GET /", result(0.62), 1000.0), Row("sqlite", "GET /x", result(None), 1000.0)]
    )
    header, _, measured, unknown = table.splitlines()
    assert "wrk cpu" in header
    assert [cell.strip() for cell in measured.split("|")][5] == "62%"
    assert [cell.strip() for cell in unknown.split("|")][5] == "-"


async def test_a_real_wrk_run_reports_a_cpu_share_between_zero_and_one_core() -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        if REQUIRE_SERVICES:
            pytest.fail("MSERVICES_TEST_REQUIRE_SERVICES=1 but wrk is missing")
        pytest.skip("needs wrk (.ci/run installs it)")

    class Hello(RequestHandler):
        def get(self) -> None:
            self.write("hi")

    server, base_url = await serve_app(Application([(r"/", Hello)]))
    try:
        measured = await asyncio.to_thread(
            run_wrk, wrk, base_url + "/", LoadSettings(duration_s=1, connections=2, threads=1)
        )
    finally:
        server.stop()
    assert measured.requests > 0
    assert measured.generator_cpu is not None
    assert 0.0 < measured.generator_cpu <= 1.05

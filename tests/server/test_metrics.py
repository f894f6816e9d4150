"""``/metrics``: the Prometheus exposition of one process, by route name, its gauges, who may
read it; and ``Metrics`` itself (a registry per process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from server.app import make_app
from server.metrics import Metrics
from server.realtime.tcp import TcpChatServer
from server.services import Services, open_services
from tests.conftest import Client, make_settings, serve_app

WAIT = 5.0


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    response = await client.get("/metrics")
    assert response.status == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """``route method status`` → count of the request counter."""
    return {
        " ".join(dict(labels)[key] for key in ("route", "method", "status")): value
        for (name, labels), value in samples.items()
        if name == "mservices_http_requests_total"
    }


async def test_requests_are_counted_by_route_name_method_and_status(client: Client) -> None:
    await client.get("/healthz")
    await client.get("/healthz")
    await client.get("/user/me")  # 401: no token
    await client.get("/robbit")  # a handler class serving two routes: named by the one matched
    counted = requests(await scrape(client))
    assert counted["healthz GET 200"] == 2
    assert counted["user-me GET 401"] == 1
    assert counted["robbit GET 302"] == 1
    assert "chat GET 302" not in counted


async def test_saved_downloads_are_counted_under_their_route_added_beside_the_table(
    client: Client, services: Services
) -> None:
    directory = services.settings.effective_download_dir
    directory.mkdir(parents=True)
    (directory / "saved.bin").write_bytes(b"saved")
    assert (await client.get("/s/downloads/saved.bin")).status == 200
    assert (await client.get("/s/downloads/missing.bin")).status == 404
    counted = requests(await scrape(client))
    assert counted["download-file GET 200"] == 1
    assert counted["download-file GET 404"] == 1
    assert "not_found GET 200" not in counted


async def test_unknown_paths_share_one_route_label_so_cardinality_stays_bounded(
    client: Client,
) -> None:
    for path in ("/no/such/page", "/another-one", "/x/1/2/3"):
        assert (await client.get(path)).status == 404
    response = await client.get("/metrics")
    assert requests(await scrape(client))["not_found GET 404"] == 3
    for path in ("/no/such/page", "/another-one", "/x/1/2/3"):
        assert path not in response.text


async def test_latency_is_a_histogram_by_route_and_status(client: Client) -> None:
    await client.get("/healthz")
    samples = await scrape(client)
    labels = (("route", "healthz"), ("status", "200"))
    assert samples[("mservices_http_request_duration_seconds_count", labels)] == 1
    assert samples[("mservices_http_request_duration_seconds_sum", labels)] > 0
    assert samples[("mservices_http_request_duration_seconds_bucket", (("le", "+Inf"), *labels))]


async def test_static_files_are_counted_under_the_handler_name(client: Client) -> None:
    assert (await client.get("/s/css/site.css")).status == 200
    assert requests(await scrape(client))["StaticFileHandler GET 200"] == 1


async def test_open_websockets_are_a_gauge(client: Client) -> None:
    url = "ws" + client.base_url.removeprefix("http") + "/ticker"
    request = HTTPRequest(url, headers={"Origin": client.base_url}, request_timeout=WAIT)
    connection = await asyncio.wait_for(websocket_connect(request), WAIT)
    try:
        assert (await scrape(client))[("mservices_websocket_connections", ())] == 1
    finally:
        connection.close()
        while await asyncio.wait_for(connection.read_message(), WAIT) is not None:
            pass
    assert (await scrape(client))[("mservices_websocket_connections", ())] == 0


async def test_open_tcp_chat_connections_are_a_gauge(client: Client, services: Services) -> None:
    chat = TcpChatServer(services)
    port = await chat.start("127.0.0.1", 0)
    services.metrics.count_tcp_connections(lambda: chat.connections)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(reader.readline(), WAIT)  # the greeting: the connection is open
        assert (await scrape(client))[("mservices_tcp_chat_connections", ())] == 1
    finally:
        writer.close()
        await chat.close("bye")
    assert (await scrape(client))[("mservices_tcp_chat_connections", ())] == 0


async def test_chat_frames_delivered_are_read_from_the_hub(
    client: Client, services: Services
) -> None:
    before = (await scrape(client))[("mservices_chat_frames_delivered_total", ())]
    services.hub.delivered += 3
    after = (await scrape(client))[("mservices_chat_frames_delivered_total", ())]
    assert after - before == 3


async def test_chat_messages_said_here_are_counted(client: Client, services: Services) -> None:
    before = (await scrape(client))[("mservices_chat_messages_total", ())]
    await services.hub.say("cxk", "lobby", "one")
    await services.hub.say("cxk", "other-room", "two")
    after = (await scrape(client))[("mservices_chat_messages_total", ())]
    assert after - before == 2


async def test_metrics_are_refused_with_403_to_a_client_outside_metrics_allow(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = make_settings(tmp_path, sqlite_url, metrics_allow="10.0.0.0/8")
    services = await open_services(settings)
    server, base_url = await serve_app(make_app(settings, services))
    http = Client(base_url)
    try:
        response = await http.get("/metrics")
    finally:
        http.close()
        server.stop()
        await services.close()
    assert response.status == 403
    assert response.json()["code"] == "forbidden"
    assert "mservices_http_requests" not in response.text


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.requests.labels(route="index", method="GET", status="200").inc()
    assert b'route="index"' in first.exposition()
    assert b'route="index"' not in second.exposition()

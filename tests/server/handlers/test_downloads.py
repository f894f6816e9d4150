"""The downloads API, the seed's /download, the page and the saved files, against a real local
upstream: every refusal answers a clear 4xx (507 for a full disk) in the standard envelope; all
of it needs ``downloads.use`` (granted with ``tests/grants.py``), and the quotas name their cap."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from repositories.audit import AuditRepository
from repositories.downloads import DOWNLOAD_STARTED
from server.downloads.errors import UserDailyCap
from server.downloads.records import Download, State
from server.services import Services, open_services
from server.settings import Settings
from tests.conftest import Client, Response, make_settings
from tests.grants import grant
from tests.server.downloads.conftest import (
    CHUNK,
    Upstream,
    finished,
    payload,
    serve_upstream,
    wait_until,
)
from tests.server.handlers.test_admin_pages import Browser
from tests.server.handlers.test_user import PASSWORD, bearer, login, register
from tests.server.test_metrics import scrape

MAX_BYTES = 200_000
USE = "downloads.use"


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str) -> Settings:
    """The local upstream is allowed; small cap, short timeout, one download at a time; a test
    parametrizes ``settings`` indirectly with a dict to change more."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    values: dict[str, Any] = {
        "download_allow": "127.0.0.1",
        "download_max_bytes": MAX_BYTES,
        "download_timeout_seconds": 1.0,
        "download_concurrency": 1,
        **overrides,
    }
    return make_settings(tmp_path, sqlite_url, **values)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A live local upstream (see ``tests/server/downloads/conftest.py``)."""
    async with serve_upstream() as state:
        yield state


async def downloader(client: Client, services: Services, name: str = "cxk") -> dict[str, str]:
    """Register ``name``, grant it ``downloads.use`` and return its Authorization header."""
    await register(client, name)
    await grant(services, name, USE)
    return bearer(await login(client, name))


@pytest.fixture
async def token(client: Client, services: Services) -> dict[str, str]:
    """The Authorization header of a logged-in user ``cxk`` granted ``downloads.use``."""
    return await downloader(client, services)


async def start(client: Client, token: dict[str, str], **body: Any) -> Response:
    return await client.post("/api/downloads", json_body=body, headers=token)


async def record_of(
    client: Client, headers: dict[str, str], services: Services, response: Response
) -> Download:
    """The manager's record of the download ``response`` started (the caller's own)."""
    me = await client.get("/user/me", headers=headers)
    return services.downloads.get(me.json()["user"]["id"], response.json()["id"])


async def settled(
    client: Client, token: dict[str, str], services: Services, response: Response
) -> dict[str, Any]:
    """Wait for the download ``response`` started to finish, then GET its Location."""
    await finished(services.downloads, await record_of(client, token, services, response))
    current = await client.get(response.headers["Location"], headers=token)
    assert current.status == 200, current.text
    body: dict[str, Any] = current.json()
    return body


def assert_refused(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"msg", "code", "errors"}
    assert body["code"] == code
    assert body["msg"]
    return body


async def test_a_download_starts_with_202_and_is_served_as_an_attachment(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    response = await start(client, token, url=upstream.url("/bytes/5000/page.html"))
    assert response.status == 202, response.text
    body = response.json()
    assert response.headers["Location"] == f"/api/downloads/{body['id']}"
    assert body["filename"] == "page.html"
    done = await settled(client, token, services, response)
    assert (done["state"], done["bytes"], done["total"]) == ("done", 5000, 5000)
    assert done["file_url"] == "/s/downloads/page.html"
    saved = await client.get(done["file_url"])
    assert saved.status == 200
    assert saved.body == payload(5000)
    assert saved.headers["Content-Disposition"].startswith("attachment")
    assert saved.headers["X-Content-Type-Options"] == "nosniff"
    assert saved.headers["Content-Type"] == "application/octet-stream"


async def test_the_site_static_files_are_still_served(client: Client) -> None:
    response = await client.get("/s/css/site.css")
    assert response.status == 200
    assert "downloads" not in response.headers.get("Content-Disposition", "")


async def test_partial_and_missing_files_are_not_served(client: Client, services: Services) -> None:
    directory = services.settings.effective_download_dir
    directory.mkdir(parents=True)
    (directory / ".part-0123").write_bytes(b"partial")
    assert (await client.get("/s/downloads/.part-0123")).status == 404
    assert (await client.get("/s/downloads/missing.bin")).status == 404
    assert (await client.get("/s/downloads/..%2F..%2Fcookie_secret")).status in (403, 404)


@pytest.mark.parametrize("path", ["a%00b", "%00", "saved.bin%00.txt"])
async def test_a_nul_byte_in_a_file_name_is_404(
    client: Client, services: Services, path: str
) -> None:
    directory = services.settings.effective_download_dir
    directory.mkdir(parents=True)
    (directory / "saved.bin").write_bytes(b"saved")
    assert (await client.get("/s/downloads/" + path)).status == 404


async def test_downloads_need_a_login(client: Client) -> None:
    response = await client.post("/api/downloads", json_body={"url": "http://example.com/"})
    assert_refused(response, 401, "not_authenticated")
    response = await client.post("/api/downloads", json_body={"bad": 1})
    assert_refused(response, 401, "not_authenticated")
    assert_refused(await client.get("/api/downloads"), 401, "not_authenticated")
    assert_refused(await client.get("/download?url=http://example.com/"), 401, "not_authenticated")


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("ftp://127.0.0.1/file", 422, "invalid_scheme"),
        ("file:///etc/passwd", 422, "invalid_scheme"),
        ("http://no-such-host.invalid/", 422, "unresolvable_host"),
        ("http://10.0.0.1/", 403, "forbidden_address"),
        ("http://169.254.169.254/latest/meta-data/", 403, "forbidden_address"),
        ("http://[::1]/", 403, "forbidden_address"),
        ("http://[2002:a9fe:a9fe::]/", 403, "forbidden_address"),
        ("http://a..b/x", 422, "unresolvable_host"),
        ("http://.example.com/", 422, "unresolvable_host"),
        ("http://" + "a" * 64 + ".example.com/", 422, "unresolvable_host"),
    ],
)
async def test_refused_urls_answer_a_4xx_naming_the_url(
    client: Client, token: dict[str, str], url: str, status: int, code: str
) -> None:
    body = assert_refused(await start(client, token, url=url), status, code)
    assert [error["field"] for error in body["errors"]] == ["url"]
    assert (await client.get("/api/downloads", headers=token)).json()["count"] == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"url": ""}, {"url": "http://x/", "extra": 1}, {"url": 5}, {"url": "x" * 3000}],
)
async def test_invalid_bodies_are_422(
    client: Client, token: dict[str, str], body: dict[str, Any]
) -> None:
    assert_refused(await start(client, token, **body), 422, "validation_error")


async def test_malformed_json_is_400(client: Client, token: dict[str, str]) -> None:
    response = await client.post(
        "/api/downloads",
        body="{",
        headers={**token, "Content-Type": "application/json"},
    )
    assert_refused(response, 400, "malformed_json")


async def test_progress_shows_while_running_and_delete_cancels(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    response = await start(client, token, url=upstream.url("/gated/p/100000?length=1"))
    location = response.headers["Location"]
    record = await record_of(client, token, services, response)
    await wait_until(lambda: record.bytes >= CHUNK, "the first chunk arrives")
    running = (await client.get(location, headers=token)).json()
    assert (running["state"], running["total"]) == ("running", 100000)
    assert 0 < running["bytes"] < 100000
    assert (await client.request("DELETE", location, headers=token)).status == 204
    cancelled = (await client.get(location, headers=token)).json()
    assert (cancelled["state"], cancelled["error_code"]) == ("cancelled", "cancelled")
    assert list(services.settings.effective_download_dir.iterdir()) == []


async def test_unknown_downloads_are_404(client: Client, token: dict[str, str]) -> None:
    path = "/api/downloads/" + "0" * 32
    assert_refused(await client.get(path, headers=token), 404, "not_found")
    assert_refused(await client.request("DELETE", path, headers=token), 404, "not_found")


async def test_users_see_only_their_own_downloads(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    other = await downloader(client, services, "other")
    response = await start(client, token, url=upstream.url("/bytes/10/mine"))
    location = response.headers["Location"]
    await settled(client, token, services, response)
    assert (await client.get("/api/downloads", headers=other)).json() == {
        "msg": "success",
        "items": [],
        "count": 0,
    }
    assert_refused(await client.get(location, headers=other), 404, "not_found")
    assert_refused(await client.request("DELETE", location, headers=other), 404, "not_found")
    mine = (await client.get("/api/downloads", headers=token)).json()
    assert [item["filename"] for item in mine["items"]] == ["mine"]


async def test_beyond_the_queue_a_download_is_429_with_retry_after(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    running = await start(client, token, url=upstream.url("/gated/q/40000"))
    queued = await start(client, token, url=upstream.url("/bytes/10/queued"))
    assert (running.status, queued.status) == (202, 202)
    refused = await start(client, token, url=upstream.url("/bytes/10/refused"))
    assert_refused(refused, 429, "too_many_downloads")
    assert refused.headers["Retry-After"]
    upstream.gate("q").set()
    assert (await settled(client, token, services, queued))["state"] == "done"


async def seed_download(client: Client, token: dict[str, str], **query: str) -> Response:
    return await client.get("/download?" + urlencode(query), headers=token)


async def test_the_seed_download_answers_once_the_file_is_saved(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    response = await seed_download(
        client, token, url=upstream.url("/bytes/3000"), filename="../../etc/passwd"
    )
    assert response.status == 200, response.text
    body = response.json()
    assert (body["state"], body["filename"], body["bytes"]) == ("done", "passwd", 3000)
    saved = services.settings.effective_download_dir / "passwd"
    assert saved.read_bytes() == payload(3000)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"/bytes/{MAX_BYTES + 1}", 413, "too_large"),
        (f"/bytes/{MAX_BYTES * 3}?chunked=1", 413, "too_large"),
        ("/silent", 504, "upstream_timeout"),
        ("/status/500", 502, "upstream_error"),
        ("/redirect?to=" + quote("http://10.0.0.1/", safe=""), 403, "forbidden_address"),
    ],
)
async def test_the_seed_download_reports_failures_in_the_envelope(
    client: Client, token: dict[str, str], upstream: Upstream, path: str, status: int, code: str
) -> None:
    response = await seed_download(client, token, url=upstream.url(path))
    assert_refused(response, status, code)


async def test_the_seed_download_refuses_bad_arguments(
    client: Client, token: dict[str, str]
) -> None:
    assert_refused(await seed_download(client, token), 422, "validation_error")
    assert_refused(
        await seed_download(client, token, url="ftp://127.0.0.1/"), 422, "invalid_scheme"
    )
    body = assert_refused(
        await seed_download(client, token, url="http://.example.com/"), 422, "unresolvable_host"
    )
    assert [error["field"] for error in body["errors"]] == ["url"]


async def test_a_failed_downloads_reason_is_in_the_callers_language(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    response = await start(client, token, url=upstream.url("/status/500"))
    chinese = await settled(client, token, services, response)
    english = await client.get(
        response.headers["Location"], headers={**token, "Accept-Language": "en"}
    )
    listed = await client.get("/api/downloads", headers={**token, "Accept-Language": "en"})

    assert (chinese["state"], chinese["error_code"], chinese["upstream_status"]) == (
        "failed",
        "upstream_error",
        500,
    )
    assert chinese["error"] == "对方服务器返回 500"
    assert english.json()["error"] == "the upstream answered 500"
    assert english.json()["error_code"] == "upstream_error"
    assert listed.json()["items"][0]["error"] == "the upstream answered 500"
    seed = await seed_download(client, token, url=upstream.url("/status/502"))
    assert assert_refused(seed, 502, "upstream_error")["msg"] == "对方服务器返回 502"


async def test_a_refused_url_is_explained_in_the_callers_language(
    client: Client, token: dict[str, str]
) -> None:
    chinese = assert_refused(
        await start(client, token, url="ftp://127.0.0.1/file"), 422, "invalid_scheme"
    )
    english = await client.post(
        "/api/downloads",
        json_body={"url": "http://10.0.0.1/"},
        headers={**token, "Accept-Language": "en-US"},
    )

    assert chinese["msg"] == "只能下载 http:// 或 https:// 网址"
    assert chinese["errors"] == [{"field": "url", "reason": "只能下载 http:// 或 https:// 网址"}]
    body = assert_refused(english, 403, "forbidden_address")
    reason = "10.0.0.1 resolves to 10.0.0.1, an address downloads may not reach"
    assert body["msg"] == reason
    assert body["errors"] == [{"field": "url", "reason": reason}]


async def test_the_seed_download_reports_a_redirect_to_a_malformed_host_as_422(
    client: Client, token: dict[str, str], upstream: Upstream
) -> None:
    response = await seed_download(client, token, url=upstream.url("/redirect?to=http://a..b/"))
    assert_refused(response, 422, "unresolvable_host")


async def test_the_seed_download_with_the_session_cookie_needs_the_xsrf_token(
    client: Client, upstream: Upstream, services: Services
) -> None:
    await register(client)
    await grant(services, "cxk", USE)
    browser = Browser(client)
    await browser.login("cxk", PASSWORD)
    query = {"url": upstream.url("/bytes/10/forged.bin")}
    forged = await browser.get("/download?" + urlencode(query))
    body = assert_refused(forged, 403, "xsrf_required")
    assert "_xsrf" in body["msg"]
    assert services.downloads.unfinished == 0
    assert list(services.settings.effective_download_dir.glob("*")) == []
    wrong = await browser.get("/download?" + urlencode({**query, "_xsrf": "2|00|00|00"}))
    assert_refused(wrong, 403, "xsrf_required")
    by_argument = await browser.get(
        "/download?" + urlencode({**query, "_xsrf": browser.cookies["_xsrf"]})
    )
    assert by_argument.status == 200, by_argument.text
    assert by_argument.json()["filename"] == "forged.bin"
    headers = {**browser.cookie_header(), "X-XSRFToken": browser.cookies["_xsrf"]}
    by_header = await client.get("/download?" + urlencode(query), headers=headers)
    assert by_header.status == 200, by_header.text
    assert by_header.json()["filename"] == "forged-1.bin"


async def test_the_page_needs_a_login_and_then_drives_the_api(
    client: Client, upstream: Upstream, services: Services
) -> None:
    anonymous = await client.get("/downloads")
    assert anonymous.status == 302
    assert anonymous.headers["Location"].startswith("/login")
    await register(client)
    await grant(services, "cxk", USE)
    browser = Browser(client)
    await browser.login("cxk", PASSWORD)
    page = await browser.get("/downloads")
    assert page.status == 200
    assert 'id="download-form"' in page.text
    assert "js/downloads.js" in page.text
    headers = {**browser.cookie_header(), "Content-Type": "application/json"}
    body = json.dumps({"url": upstream.url("/bytes/10/from-page")})
    forged = await client.post("/api/downloads", body=body, headers=headers)
    assert forged.status == 403, "the session cookie alone does not pass the XSRF check"
    headers["X-XSRFToken"] = browser.cookies["_xsrf"]
    response = await client.post("/api/downloads", body=body, headers=headers)
    assert response.status == 202, response.text
    record = await record_of(client, browser.cookie_header(), services, response)
    await finished(services.downloads, record)
    assert record.state is State.DONE


async def test_the_page_is_chinese_by_default_and_english_on_request(
    client: Client, services: Services
) -> None:
    await register(client)
    await grant(services, "cxk", USE)
    browser = Browser(client)
    await browser.login("cxk", PASSWORD)
    await browser.get("/")  # the login's welcome flash

    chinese = await browser.get("/downloads")
    browser.cookies["mservices_lang"] = "en_US"
    english = await browser.get("/downloads")

    assert "<title>下载 · mservices</title>" in chinese.text
    assert "<label>文件名（可不填） <input" in chinese.text
    assert "<code>/s/downloads/</code>，知道文件名的人都能取到" in chinese.text
    assert "<title>Downloads · mservices</title>" in english.text
    assert "<label>File name (optional) <input" in english.text
    assert ">Download</button>" in english.text
    assert "saves it to <code>/s/downloads/</code>, where anyone" in english.text
    main = english.text.split("<main", 1)[1].split("</main>", 1)[0]
    assert re.findall(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]", main) == []
    texts = json.loads(english.text.split('id="script-texts">', 1)[1].split("</script>", 1)[0])
    assert texts["The file was not saved"] == "The file was not saved"
    zh_texts = json.loads(chinese.text.split('id="script-texts">', 1)[1].split("</script>", 1)[0])
    assert zh_texts["The file was not saved"] == "文件未保存"
    assert zh_texts["about {time} left"] == "剩余约 {time}"


async def test_metrics_count_downloads_by_outcome(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    refused = await start(client, token, url="http://10.0.0.1/secret")
    assert_refused(refused, 403, "forbidden_address")
    done = await start(client, token, url=upstream.url("/bytes/5000/counted.bin"))
    assert (await settled(client, token, services, done))["state"] == "done"
    samples = await scrape(client)
    assert samples[("mservices_downloads_total", (("outcome", "refused"),))] == 1
    assert samples[("mservices_downloads_total", (("outcome", "done"),))] == 1
    assert samples[("mservices_downloads_active", ())] == 0


# -- the permission and the quotas ------------------------------------------------------------


async def test_a_user_without_downloads_use_is_refused_everywhere(
    client: Client, upstream: Upstream, services: Services
) -> None:
    await register(client)
    headers = bearer(await login(client))
    url = upstream.url("/bytes/10/denied")
    for response in (
        await start(client, headers, url=url),
        await client.get("/api/downloads", headers=headers),
        await seed_download(client, headers, url=url),
    ):
        body = assert_refused(response, 403, "permission_required")
        assert USE in body["msg"]
    browser = Browser(client)
    await browser.login("cxk", PASSWORD)
    page = await browser.get("/downloads")
    assert page.status == 403
    assert page.headers["Content-Type"].startswith("text/html")
    assert USE in page.text
    assert services.downloads.unfinished == 0
    assert not services.settings.effective_download_dir.exists()


@pytest.mark.parametrize(
    "settings", [{"download_concurrency": 10, "download_user_concurrency": 2}], indirect=True
)
async def test_a_user_beyond_their_concurrency_cap_is_429_naming_it(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    held = [await start(client, token, url=upstream.url(f"/gated/c/40000?n={n}")) for n in (1, 2)]
    assert [response.status for response in held] == [202, 202]
    for refused in (
        await start(client, token, url=upstream.url("/bytes/10/third")),
        await seed_download(client, token, url=upstream.url("/bytes/10/third")),
    ):
        body = assert_refused(refused, 429, "user_concurrency_cap")
        assert body["msg"] == "每个用户最多同时进行 2 个下载，请等你的下载完成"
        assert int(refused.headers["Retry-After"]) > 0
    other = await downloader(client, services, "other")
    assert (await start(client, other, url=upstream.url("/bytes/10/theirs"))).status == 202
    upstream.gate("c").set()
    for response in held:
        assert (await settled(client, token, services, response))["state"] == "done"
    assert (await seed_download(client, token, url=upstream.url("/bytes/10/then"))).status == 200


@pytest.mark.parametrize("settings", [{"download_user_daily": 2}], indirect=True)
async def test_a_user_beyond_their_daily_cap_is_429_until_a_day_after_the_oldest_start(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    assert (await seed_download(client, token, url=upstream.url("/bytes/10/a"))).status == 200
    assert (await start(client, token, url=upstream.url("/bytes/10/b"))).status == 202
    for refused in (
        await start(client, token, url=upstream.url("/bytes/10/c")),
        await seed_download(client, token, url=upstream.url("/bytes/10/c")),
    ):
        body = assert_refused(refused, 429, "user_daily_cap")
        assert body["msg"].startswith("每个用户 24 小时内最多下载 2 次；")
        assert 0 < int(refused.headers["Retry-After"]) <= 24 * 3600
    # another process (or this one restarted) counts the same starts
    restarted = await open_services(services.settings)
    try:
        me = (await client.get("/user/me", headers=token)).json()["user"]
        with pytest.raises(UserDailyCap):
            await restarted.downloads.start(me["id"], upstream.url("/bytes/10/c"))
    finally:
        await restarted.close()
    async with services.sessions() as session:
        rows = await AuditRepository(session).list(action=DOWNLOAD_STARTED)
    assert [(row.actor, row.detail) for row in rows] == [
        ("cxk", upstream.url("/bytes/10/b")),
        ("cxk", upstream.url("/bytes/10/a")),
    ]


@pytest.mark.parametrize("settings", [{"download_disk_max_bytes": 10_000}], indirect=True)
async def test_a_full_downloads_directory_is_507_and_a_download_passing_the_cap_fails(
    client: Client, token: dict[str, str], upstream: Upstream, services: Services
) -> None:
    cut = await seed_download(client, token, url=upstream.url("/bytes/10001/big?chunked=1"))
    body = assert_refused(cut, 507, "disk_cap")
    assert body["msg"] == "下载目录最多容纳 10000 字节；这个下载会超出上限"
    assert (await seed_download(client, token, url=upstream.url("/bytes/10000"))).status == 200
    for refused in (
        await start(client, token, url=upstream.url("/bytes/1/one")),
        await seed_download(client, token, url=upstream.url("/bytes/1/one")),
    ):
        body = assert_refused(refused, 507, "disk_cap")
        assert body["msg"] == "下载目录最多容纳 10000 字节；现在已经满了"
    assert [path.name for path in services.settings.effective_download_dir.iterdir()] == ["10000"]

"""/echo (seed §1.2): what the server saw, odd bytes reported rather than crashed on, files
described but never echoed, credentials redacted, caps, and every method."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from server.handlers.echo import MAX_ECHO_BODY, MAX_ENTRIES, MAX_TEXT, REDACTED
from tests.conftest import Client, Response

BOUNDARY = "echo-boundary"


def multipart(*parts: tuple[str, bytes]) -> bytes:
    """A multipart/form-data body of raw part headers (``Content-Disposition`` params) and
    contents."""
    chunks = [
        b"--%s\r\nContent-Disposition: form-data; %s\r\n%s\r\n%s\r\n"
        % (
            BOUNDARY.encode(),
            disposition,
            b"Content-Type: text/plain\r\n" if b"filename" in disposition else b"",
            content,
        )
        for disposition, content in ((d.encode("latin-1"), c) for d, c in parts)
    ]
    return b"".join(chunks) + b"--%s--\r\n" % BOUNDARY.encode()


async def raw_request(client: Client, request: bytes) -> tuple[int, Any]:
    """Send ``request`` byte for byte (clients re-encode odd header bytes) and parse the JSON."""
    address = urlsplit(client.base_url)
    assert address.hostname is not None and address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else None


def echoed(response: Response) -> dict[str, Any]:
    assert response.status == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["msg"] == "success"
    return body


async def test_get_echoes_the_query_path_method_host_and_client_address(client: Client) -> None:
    body = echoed(await client.get("/echo?wd=%E4%B8%AD%E6%96%87&title=a&title=b"))

    assert body["query_arguments"] == {"wd": ["中文"], "title": ["a", "b"]}
    assert body["arguments"] == body["query_arguments"]
    assert body["body_arguments"] == {}
    assert (body["method"], body["path"], body["remote_ip"]) == ("GET", "/echo", "127.0.0.1")
    port = urlsplit(client.base_url).port
    assert (body["host"], body["host_name"]) == (f"127.0.0.1:{port}", "127.0.0.1")
    assert body["undecodable"] == [] and body["truncated"] is False


async def test_a_posted_form_is_echoed_as_body_and_merged_arguments(client: Client) -> None:
    # The seed's client: requests.post(url, data={"name": ["ck", "cxk"], "city": "山西"})
    form = "name=ck&name=cxk&city=%E5%B1%B1%E8%A5%BF"
    body = echoed(
        await client.post(
            "/echo?name=q",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    )

    assert body["body_arguments"] == {"name": ["ck", "cxk"], "city": ["山西"]}
    assert body["query_arguments"] == {"name": ["q"]}
    assert body["arguments"] == {"name": ["q", "ck", "cxk"], "city": ["山西"]}
    assert body["headers"]["Content-Type"] == ["application/x-www-form-urlencoded"]


async def test_uploaded_files_are_described_but_their_content_never_echoed(
    client: Client,
) -> None:
    secret = b"the file's own content " * 10
    payload = multipart(
        ('name="note"', "备注".encode()),
        ('name="upload"; filename="a.txt"', secret),
        ('name="upload"; filename="b.txt"', b""),
    )
    response = await client.post(
        "/echo",
        body=payload,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    body = echoed(response)

    assert body["body_arguments"] == {"note": ["备注"]}
    assert body["files"] == [
        {"field": "upload", "filename": "a.txt", "size": len(secret), "content_type": "text/plain"},
        {"field": "upload", "filename": "b.txt", "size": 0, "content_type": "text/plain"},
    ]
    assert b"own content" not in response.body


async def test_multipart_field_names_are_echoed_as_sent_and_merged_with_the_query(
    client: Client,
) -> None:
    # The part headers carry the UTF-8 bytes of the names; ``multipart`` sends them as latin-1.
    field = 'name="été"'.encode().decode("latin-1")
    upload = 'name="pièce"; filename="f.txt"'.encode().decode("latin-1")
    payload = multipart((field, b"oui"), (upload, b"content"))
    body = echoed(
        await client.post(
            "/echo?%C3%A9t%C3%A9=q",
            body=payload,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
    )

    assert body["query_arguments"] == {"été": ["q"]}
    assert body["body_arguments"] == {"été": ["oui"]}
    assert body["arguments"] == {"été": ["q", "oui"]}
    assert [upload["field"] for upload in body["files"]] == ["pièce"]
    assert body["undecodable"] == []


async def test_bytes_that_are_not_utf8_in_query_and_form_are_replaced_and_listed(
    client: Client,
) -> None:
    body = echoed(
        await client.post(
            "/echo?wd=%FFok&%FE=1",
            body="city=%C0",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    )

    assert body["query_arguments"] == {"wd": ["\ufffdok"], "\ufffd": ["1"]}
    assert body["body_arguments"] == {"city": ["\ufffd"]}
    assert set(body["undecodable"]) == {
        "query_arguments.wd",
        "query_arguments.\ufffd",
        "body_arguments.city",
        "arguments.wd",
        "arguments.\ufffd",
        "arguments.city",
    }


async def test_bytes_that_are_not_utf8_in_headers_and_cookies_are_replaced_and_listed(
    client: Client,
) -> None:
    status, body = await raw_request(
        client,
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Name: caf\xe9\r\nX-City: \xe5\xb1\xb1\r\n"
        b"Cookie: good=%E4; bad=\xff\xfe\r\nConnection: close\r\n\r\n",
    )

    assert status == 200
    assert body["headers"]["X-Name"] == ["caf\ufffd"]
    assert body["headers"]["X-City"] == ["山"]
    assert body["cookies"] == {"good": "%E4", "bad": "\ufffd\ufffd"}
    assert body["undecodable"] == ["headers.X-Name", "cookies.bad"]


async def test_a_filename_that_was_not_utf8_is_replaced_and_listed(client: Client) -> None:
    payload = multipart(("name=\"upload\"; filename*=utf-8''bad%FFname.txt", b"x"))
    body = echoed(
        await client.post(
            "/echo",
            body=payload,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
    )

    assert body["files"][0]["filename"] == "bad\ufffdname.txt"
    assert body["undecodable"] == ["files.upload.filename"]


@pytest.mark.parametrize(
    "payload",
    [
        b'--echo-boundary\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nx\r\n'
        b"--echo-boundary--\r\n",
        b"--echo-boundary\r\nno final boundary",
        b"--echo-boundary\r\nContent-Disposition: form-data\r\n\r\nx\r\n--echo-boundary--\r\n",
    ],
    ids=["raw-bytes-in-part-header", "truncated", "part-without-name"],
)
async def test_a_broken_multipart_body_is_a_400_envelope(client: Client, payload: bytes) -> None:
    response = await client.post(
        "/echo",
        body=payload,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )

    assert response.status == 400
    assert set(response.json()) == {"msg", "code", "errors"}


async def test_a_body_over_the_cap_is_413(client: Client) -> None:
    response = await client.post(
        "/echo", body=b"x" * (MAX_ECHO_BODY + 1), headers={"Content-Type": "text/plain"}
    )

    assert response.status == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["msg"] == f"请求体超过 {MAX_ECHO_BODY} 字节"
    english = await client.post(
        "/echo",
        body=b"x" * (MAX_ECHO_BODY + 1),
        headers={"Content-Type": "text/plain", "Accept-Language": "en"},
    )
    assert english.json()["msg"] == f"the body exceeds {MAX_ECHO_BODY} bytes"


async def test_credentials_are_redacted_but_the_clients_other_cookies_are_echoed(
    client: Client,
) -> None:
    body = echoed(
        await client.get(
            "/echo",
            headers={
                "Authorization": "Bearer not-a-real-token",
                "Cookie": "theme=dark; mservices_session=s3cret; mservices_flash=f1ash",
            },
        )
    )

    assert body["headers"]["Authorization"] == [REDACTED]
    assert body["headers"]["Cookie"] == [REDACTED]
    assert body["cookies"] == {
        "theme": "dark",
        "mservices_session": REDACTED,
        "mservices_flash": REDACTED,
    }
    assert "s3cret" not in json.dumps(body) and "not-a-real-token" not in json.dumps(body)


async def test_many_entries_and_long_values_are_capped_and_flagged(client: Client) -> None:
    fields = "&".join(f"f{index}=v" for index in range(MAX_ENTRIES + 20))
    body = echoed(await client.get(f"/echo?{fields}&long={'y' * (MAX_TEXT + 50)}"))

    assert len(body["query_arguments"]) == MAX_ENTRIES
    assert body["truncated"] is True
    short = echoed(await client.get(f"/echo?long={'y' * (MAX_TEXT + 50)}"))
    assert short["query_arguments"]["long"] == ["y" * MAX_TEXT]
    assert short["truncated"] is True


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_every_method_is_echoed_without_login_or_xsrf(client: Client, method: str) -> None:
    response = await client.request(
        method,
        "/echo?x=1",
        body=b"a=1",
        # A browser session cookie without an XSRF token: nothing to forge on /echo.
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "mservices_session=whatever",
        },
    )

    body = echoed(response)
    assert body["method"] == method
    assert body["query_arguments"] == {"x": ["1"]}


async def test_head_answers_the_headers_only(client: Client) -> None:
    response = await client.request("HEAD", "/echo")

    assert response.status == 200
    assert response.body == b""
    assert response.headers["Content-Type"].startswith("application/json")


async def test_a_cors_preflight_lists_the_echoed_methods(client: Client) -> None:
    response = await client.request(
        "OPTIONS",
        "/echo",
        headers={"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "PUT"},
    )

    assert response.status == 204
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE"


async def test_echo_is_documented_in_openapi(client: Client) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert set(paths["/echo"]) == {"get", "post", "put", "patch", "delete"}

"""``/echo`` (seed §1.2): what the server saw of a request, answered as JSON.

Every method is echoed. Text is shown as UTF-8; bytes that are not valid UTF-8 (in a query or
form field, a header, a cookie, a filename) become U+FFFD and the place is listed in
``undecodable`` rather than failing the request. Tornado keeps query keys, headers and cookies as
latin-1 text, so those are turned back into their bytes and decoded as UTF-8 here (multipart
field names excepted: Tornado decodes part headers as UTF-8 itself).

What is echoed is capped (entries per section, characters per value, a body size) and the
credentials a script must not be able to read back are redacted: the ``Authorization`` and
``Cookie`` headers, and the values of the HttpOnly session and flash cookies. Other cookies are
the client's own and are echoed as sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from tornado.httputil import HTTPFile, HTTPServerRequest, parse_cookie

from schemas.echo import EchoFile, EchoRead
from schemas.text import Text
from server.errors import ApiError
from server.handlers.base import FLASH_COOKIE, SESSION_COOKIE, ApiHandler
from server.openapi import Operation
from server.principal import Principal

MAX_ECHO_BODY = 1024 * 1024
"""A larger body is refused with 413: /echo is a demo, not an upload sink."""
MAX_ENTRIES = 100
"""At most this many entries per section (fields, values of one field, headers, cookies, files)."""
MAX_TEXT = 1024
"""At most this many characters per echoed key or value."""
REDACTED = "[redacted]"
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
HIDDEN_COOKIES = frozenset({SESSION_COOKIE, FLASH_COOKIE})
"""HttpOnly cookies: echoing them would hand their value to any script on the page."""

T = TypeVar("T")


def wire_text(value: str) -> tuple[str, bool]:
    """Text Tornado decoded as latin-1 (query keys, headers, cookies) decoded as UTF-8 instead;
    the flag is False when the bytes were not valid UTF-8 (they are shown as U+FFFD)."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value, True  # already real text (e.g. a multipart field name)
    return bytes_text(raw)


def bytes_text(raw: bytes) -> tuple[str, bool]:
    """``raw`` as UTF-8 text; the flag is False when it was not valid UTF-8."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


@dataclass
class Collector:
    """Decodes and caps what is echoed, remembering where bytes were not UTF-8 or were cut."""

    undecodable: list[str] = field(default_factory=list)
    truncated: bool = False

    def cap(self, text: str) -> str:
        """``text`` cut to ``MAX_TEXT`` characters."""
        if len(text) > MAX_TEXT:
            self.truncated = True
            return text[:MAX_TEXT]
        return text

    def key(self, section: str, name: str) -> str:
        """A latin-1 key as UTF-8 text."""
        text, ok = wire_text(name)
        if not ok:
            self.mark(f"{section}.{text}")
        return self.cap(text)

    def marked(self, where: str) -> bool:
        """True when bytes at ``where`` were noted as not valid UTF-8."""
        return where in self.undecodable

    def mark(self, where: str) -> None:
        """Note that bytes at ``where`` were not valid UTF-8."""
        if where not in self.undecodable and len(self.undecodable) < MAX_ENTRIES:
            self.undecodable.append(where)

    def entries(self, items: Iterable[T]) -> list[T]:
        """The first ``MAX_ENTRIES`` of ``items``."""
        listed = list(items)
        if len(listed) > MAX_ENTRIES:
            self.truncated = True
        return listed[:MAX_ENTRIES]

    def arguments(
        self, section: str, arguments: Mapping[str, list[bytes]], *, wire_keys: bool = True
    ) -> dict[str, list[str]]:
        """Fields (byte values) as text; keys are latin-1 wire text (query, urlencoded form)
        unless ``wire_keys`` is False (multipart names, which Tornado decoded as UTF-8)."""
        decoded: dict[str, list[str]] = {}
        for name, values in self.entries(arguments.items()):
            key = self.key(section, name) if wire_keys else self.cap(name)
            texts = []
            for value in self.entries(values):
                text, ok = bytes_text(value)
                if not ok:
                    self.mark(f"{section}.{key}")
                texts.append(self.cap(text))
            decoded[key] = texts
        return decoded

    def merged(self, *sections: tuple[str, dict[str, list[str]]]) -> dict[str, list[str]]:
        """The decoded ``(section, fields)`` merged as Tornado's ``arguments`` are (query
        values first), noting under ``arguments`` what was undecodable in a section."""
        both: dict[str, list[str]] = {}
        for section, fields in sections:
            for key, values in fields.items():
                both.setdefault(key, []).extend(values)
                if self.marked(f"{section}.{key}"):
                    self.mark(f"arguments.{key}")
        return {key: self.entries(values) for key, values in self.entries(both.items())}

    def headers(self, request: HTTPServerRequest) -> dict[str, list[str]]:
        """Every header with all its values; credentials redacted."""
        decoded: dict[str, list[str]] = {}
        for name, value in self.entries(request.headers.get_all()):
            if name.lower() in REDACTED_HEADERS:
                text = REDACTED
            else:
                text, ok = wire_text(value)
                if not ok:
                    self.mark(f"headers.{name}")
            decoded.setdefault(self.cap(name), []).append(self.cap(text))
        return decoded

    def cookies(self, request: HTTPServerRequest) -> dict[str, str]:
        """The cookies sent; the HttpOnly session and flash cookies redacted. The header is
        parsed here, not through ``request.cookies``, which drops names Python's cookie module
        dislikes."""
        decoded: dict[str, str] = {}
        for name, value in self.entries(parse_cookie(request.headers.get("Cookie", "")).items()):
            key = self.key("cookies", name)
            if name in HIDDEN_COOKIES:
                decoded[key] = REDACTED
                continue
            text, ok = wire_text(value)
            if not ok:
                self.mark(f"cookies.{key}")
            decoded[key] = self.cap(text)
        return decoded

    def files(self, files: Mapping[str, list[HTTPFile]]) -> list[EchoFile]:
        """Uploaded files: field, filename, size and type, never the content."""
        listed = []
        for name, uploads in files.items():
            key = self.cap(name)  # a multipart name: Tornado already decoded it as UTF-8
            for upload in uploads:
                # Tornado decodes part headers as UTF-8 (invalid bytes there are a 400) and
                # RFC 2231 ``filename*=`` values with replacement characters.
                if "\ufffd" in upload.filename:
                    self.mark(f"files.{key}.filename")
                listed.append(
                    EchoFile(
                        field=key,
                        filename=self.cap(upload.filename),
                        size=len(upload.body),
                        content_type=self.cap(upload.content_type),
                    )
                )
        return self.entries(listed)


def is_multipart(request: HTTPServerRequest) -> bool:
    """True when Tornado parsed the body as multipart (its field names are already text)."""
    return request.headers.get("Content-Type", "").startswith("multipart/form-data")


def echo(request: HTTPServerRequest) -> EchoRead:
    """What the server saw of ``request``."""
    seen = Collector()
    path, path_ok = wire_text(request.path)
    host, host_ok = wire_text(request.host)
    for where, ok in (("path", path_ok), ("host", host_ok)):
        if not ok:
            seen.mark(where)
    query = seen.arguments("query_arguments", request.query_arguments)
    body = seen.arguments(
        "body_arguments", request.body_arguments, wire_keys=not is_multipart(request)
    )
    both = seen.merged(("query_arguments", query), ("body_arguments", body))
    return EchoRead(
        method=request.method or "",
        path=seen.cap(path),
        host=seen.cap(host),
        host_name=seen.cap(wire_text(request.host_name)[0]),
        remote_ip=request.remote_ip or "",
        arguments=both,
        query_arguments=query,
        body_arguments=body,
        headers=seen.headers(request),
        cookies=seen.cookies(request),
        files=seen.files(request.files),
        undecodable=seen.undecodable,
        truncated=seen.truncated,
    )


ECHO_OPERATION = Operation(
    "Echo what the server saw of this request (seed §1.2)",
    EchoRead,
    errors=(400, 413),
    description="Any method. Bytes that are not UTF-8 are listed in `undecodable`; "
    "credentials are redacted; entries and values are capped.",
    tags=("seed demos",),
)


class EchoHandler(ApiHandler):
    """``/echo``, any method: the request's arguments, headers, cookies, files and addresses.

    It needs no login and changes nothing, so it neither authenticates (a stale token is echoed,
    not refused) nor checks XSRF (there is nothing to forge)."""

    operations: ClassVar[dict[str, Operation]] = {
        method: ECHO_OPERATION for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    }

    async def authenticate(self) -> Principal | None:
        """Nobody: /echo is open and must echo even a broken ``Authorization`` header."""
        return None

    def check_xsrf_cookie(self) -> None:
        """Nothing to check: the echo uses no credential and changes nothing."""

    async def answer(self) -> None:
        """Echo the request (413 for a body over ``MAX_ECHO_BODY``)."""
        if len(self.request.body) > MAX_ECHO_BODY:
            raise ApiError(
                413,
                "payload_too_large",
                Text("the body exceeds {limit} bytes", limit=MAX_ECHO_BODY),
            )
        self.set_header("Cache-Control", "no-store")
        await self.respond(echo(self.request))

    async def get(self) -> None:
        """Echo a GET."""
        await self.answer()

    async def head(self) -> None:
        """Echo a HEAD (Tornado sends the headers only)."""
        await self.answer()

    async def post(self) -> None:
        """Echo a POST (form fields and files included)."""
        await self.answer()

    async def put(self) -> None:
        """Echo a PUT."""
        await self.answer()

    async def patch(self) -> None:
        """Echo a PATCH."""
        await self.answer()

    async def delete(self) -> None:
        """Echo a DELETE."""
        await self.answer()

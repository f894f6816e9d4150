"""Schemas of ``/echo`` (seed §1.2): what the server saw of a request, as JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import Schema


class EchoFile(Schema):
    """One uploaded file: its form field, filename, size and declared type, never its content."""

    field: str = Field(description="The form field the file came in.")
    filename: str
    size: int = Field(ge=0, description="Bytes received.")
    content_type: str


class EchoRead(Schema):
    """The request as the server saw it. Text is UTF-8; bytes that are not valid UTF-8 are shown
    as U+FFFD and the place they were found is listed in ``undecodable``."""

    msg: Literal["success"] = "success"
    method: str
    path: str
    host: str
    host_name: str
    remote_ip: str = Field(description="The client's address (the proxy's view behind nginx).")
    arguments: dict[str, list[str]] = Field(description="Query and form fields together.")
    query_arguments: dict[str, list[str]]
    body_arguments: dict[str, list[str]]
    headers: dict[str, list[str]] = Field(
        description="Request headers; credentials (Authorization, Cookie) are redacted."
    )
    cookies: dict[str, str] = Field(
        description="Cookies sent; the HttpOnly session and flash cookies are redacted."
    )
    files: list[EchoFile]
    undecodable: list[str] = Field(
        description="Where bytes were not valid UTF-8, e.g. `query_arguments.wd` or "
        "`headers.X-Name`."
    )
    truncated: bool = Field(description="True when some values or entries were cut to the caps.")

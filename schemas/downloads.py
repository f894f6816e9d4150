"""Requests and responses of ``/api/downloads`` and the seed's ``/download``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field

from schemas.common import RequestSchema, Schema

DownloadUrl = Annotated[
    str, Field(min_length=1, max_length=2048, description="An http:// or https:// URL.")
]
RequestedName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description="The name to save under; reduced to a safe basename, suffixed if taken.",
    ),
]


class DownloadCreate(RequestSchema):
    """``POST /api/downloads``: what to fetch, and optionally under which name."""

    url: DownloadUrl
    filename: RequestedName | None = None


class DownloadRead(Schema):
    """One download as its owner sees it."""

    id: str
    url: str
    filename: str = Field(description="The file's name in the downloads directory.")
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    bytes: int = Field(description="Body bytes received so far.")
    total: int | None = Field(description="The announced size (Content-Length), when known.")
    error: str | None = None
    error_code: str | None = None
    error_status: int | None = Field(
        default=None, description="The HTTP status the failure maps to (413, 502, 504, ...)."
    )
    upstream_status: int | None = Field(
        default=None, description="The upstream's error status, when it answered one."
    )
    file_url: str | None = Field(default=None, description="Where the saved file is served.")
    created_at: dt.datetime
    finished_at: dt.datetime | None = None


class DownloadResponse(DownloadRead):
    """A single download with the usual ``msg``."""

    msg: Literal["success"] = "success"


class DownloadList(Schema):
    """The caller's downloads, newest first."""

    msg: Literal["success"] = "success"
    items: list[DownloadRead]
    count: int

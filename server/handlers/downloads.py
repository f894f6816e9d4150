"""Downloads (seed §8): the ``/api/downloads`` resource, the seed's ``/download``, the page, and
the handler that serves saved files under ``/s/downloads/``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import model_validator
from tornado.web import HTTPError, StaticFileHandler

from schemas.downloads import (
    DownloadCreate,
    DownloadList,
    DownloadRead,
    DownloadResponse,
    DownloadUrl,
    RequestedName,
)
from schemas.text import Text
from server.downloads.errors import DownloadError, ForbiddenAddress, InvalidUrl
from server.downloads.manager import DownloadManager
from server.downloads.records import Download, State
from server.errors import ApiError, FieldProblem, Message
from server.handlers.base import ApiHandler, PageHandler, QuerySchema
from server.openapi import Operation

FILE_PREFIX = "/s/downloads/"
REFUSALS = (403, 413, 422, 429, 507)


def download_read(record: Download, text: Callable[[Message], str]) -> DownloadRead:
    """The API's view of ``record``, its reason in words put by ``text`` into the caller's
    language (``BaseHandler.text``); ``file_url`` once the file is saved."""
    done = record.state is State.DONE
    return DownloadRead(
        id=record.id,
        url=record.url,
        filename=record.filename,
        state=record.state.value,
        bytes=record.bytes,
        total=record.total,
        error=None if record.error is None else text(record.error),
        error_code=record.error_code,
        error_status=record.error_status,
        upstream_status=record.upstream_status,
        file_url=FILE_PREFIX + quote(record.filename) if done else None,
        created_at=record.created_at,
        finished_at=record.finished_at,
    )


def refusal(error: DownloadError) -> ApiError:
    """The envelope of a refused download; URL problems name the ``url`` field."""
    errors = (
        [FieldProblem("url", error.message)]
        if isinstance(error, InvalidUrl | ForbiddenAddress)
        else []
    )
    return ApiError(error.status, error.code, error.message, errors=errors, headers=error.headers)


class SeedDownloadQuery(QuerySchema):
    """``GET /download?url=&filename=``: the fields of ``DownloadCreate`` as a query string; an
    empty ``filename`` means none."""

    url: DownloadUrl
    filename: RequestedName | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_filename_is_unset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("filename") == "":
            return {name: value for name, value in data.items() if name != "filename"}
        return data


class DownloadsApiHandler(ApiHandler):
    """What the download handlers share: the manager, and starting one for the caller."""

    @property
    def downloads(self) -> DownloadManager:
        """This process's download manager."""
        return self.services.downloads

    async def start(self, body: DownloadCreate) -> Download:
        """Start ``body``'s download for the logged-in caller, or refuse with a clear 4xx (or
        507 when the downloads directory is full); a refusal names the cap it hit."""
        principal = self.current_login().principal
        try:
            return await self.downloads.start(
                principal.user_id,
                body.url,
                body.filename,
                actor=principal.name,
                client_ip=self.request.remote_ip,
            )
        except DownloadError as error:
            raise refusal(error) from None


class DownloadsHandler(DownloadsApiHandler):
    """``GET /api/downloads`` (the caller's) and ``POST /api/downloads`` (start one: 202)."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation("The caller's downloads, newest first", DownloadList, tags=("downloads",)),
        "POST": Operation(
            "Start a download in the background",
            DownloadResponse,
            status=202,
            request=DownloadCreate,
            errors=REFUSALS,
            description=(
                "Answers at once with the download's id and a Location to poll. Quotas: 429 "
                "`too_many_downloads` (server queue), `user_concurrency_cap` or `user_daily_cap` "
                "(with Retry-After), 507 `disk_cap` (the downloads directory is full)."
            ),
            tags=("downloads",),
        ),
    }

    async def get(self) -> None:
        """List the caller's downloads."""
        login = self.current_login()
        records = self.downloads.list(login.principal.user_id)
        items = [download_read(record, self.text) for record in records]
        await self.respond(DownloadList(items=items, count=len(items)))

    async def post(self) -> None:
        """Check the URL, start the download, answer 202 with its ``Location``."""
        self.current_login()
        body = self.parse(DownloadCreate)
        record = await self.start(body)
        self.set_header("Location", self.reverse_url("api-download", record.id))
        await self.respond(DownloadResponse(**download_read(record, self.text).model_dump()), 202)


class DownloadHandler(DownloadsApiHandler):
    """``GET /api/downloads/{id}`` (state and progress) and ``DELETE`` (cancel)."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "One of the caller's downloads",
            DownloadResponse,
            errors=(404,),
            tags=("downloads",),
        ),
        "DELETE": Operation(
            "Cancel a download (its partial file is deleted) or forget a finished one",
            DownloadResponse,
            status=204,
            errors=(404,),
            tags=("downloads",),
        ),
    }

    async def get(self, download_id: str) -> None:
        """The download's state, bytes, total and error."""
        login = self.current_login()
        record = self.downloads.get(login.principal.user_id, download_id)
        await self.respond(DownloadResponse(**download_read(record, self.text).model_dump()))

    async def delete(self, download_id: str) -> None:
        """Cancel it; 204 once the partial file is gone."""
        login = self.current_login()
        await self.downloads.cancel(login.principal.user_id, download_id)
        self.set_status(204)
        await self.finish()


class SeedDownloadHandler(DownloadsApiHandler):
    """``GET /download?url=&filename=`` (seed §8.2): download, and answer once the file is saved.

    A GET that acts: Tornado checks XSRF on unsafe methods only, and a SameSite=Lax session
    cookie still rides along a top-level navigation from another site, so a call authenticated
    by the session cookie must carry the ``_xsrf`` argument or the ``X-XSRFToken`` header (a
    bearer token needs neither, as everywhere in the API)."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Download and wait until the file is saved (the seed's handler)",
            DownloadResponse,
            errors=(*REFUSALS, 409, 502, 504),
            description="Query arguments `url` and optional `filename`.",
            tags=("downloads",),
            query=SeedDownloadQuery,
        )
    }

    async def get(self) -> None:
        """Start the download, wait for it, then answer the saved file or the failure."""
        self.current_login()
        self.check_xsrf_on_get()
        query = self.query(SeedDownloadQuery)
        body = DownloadCreate(url=query.url, filename=query.filename)
        record = await self.downloads.wait(await self.start(body))
        if record.state is not State.DONE:
            raise ApiError(
                record.error_status or 502,
                record.error_code or "download_failed",
                record.error or Text("the download failed"),
            )
        await self.respond(DownloadResponse(**download_read(record, self.text).model_dump()))

    def check_xsrf_on_get(self) -> None:
        """``check_xsrf_cookie`` for this GET, refused as ``xsrf_required`` (403)."""
        try:
            self.check_xsrf_cookie()
        except HTTPError:
            raise ApiError(
                403,
                "xsrf_required",
                Text("with the session cookie, send the _xsrf argument or the X-XSRFToken header"),
            ) from None


class DownloadsPageHandler(PageHandler):
    """``GET /downloads``: a form and live progress bars (the page polls ``/api/downloads``)."""

    async def get(self) -> None:
        """Render ``downloads.html`` for a logged-in user."""
        self.current_login()
        await self.render_page("downloads.html")


class DownloadFileHandler(StaticFileHandler):
    """Serves saved downloads: always as an attachment of opaque type, never sniffed, so a
    downloaded HTML page can never run on this origin. Hidden names (partial files) are 404."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        """Refuse partial (dot) files and names with a NUL byte (no file has one; the OS calls
        would raise), then apply StaticFileHandler's checks."""
        if "\x00" in absolute_path:
            raise HTTPError(404)
        if self.path_args and str(self.path_args[0]).rsplit("/", 1)[-1].startswith("."):
            raise HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def compute_etag(self) -> str | None:
        """No ETag: StaticFileHandler would hash the whole file on the loop and cache the hash
        forever; Last-Modified is enough for downloads."""
        return None

    def get_content_type(self) -> str:
        """Opaque bytes, whatever the file's extension says."""
        return "application/octet-stream"

    def set_extra_headers(self, path: str) -> None:
        """Attachment, nosniff, and a sandbox in case a browser renders it anyway."""
        name = path.rsplit("/", 1)[-1]
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox")

"""Why a download was refused or failed; each error carries the HTTP status the edge answers,
a stable ``code`` and its reason as a ``Text`` (translated for whoever reads it: the JSON
envelope, or a download's status)."""

from __future__ import annotations

from repositories.errors import DomainError
from schemas.text import Text, ntext


class DownloadError(DomainError):
    """Base of every download refusal or failure."""

    code = "download_failed"
    status = 502


class InvalidUrl(DownloadError):
    """The URL is malformed, not http(s), or its host does not resolve."""

    code = "invalid_url"
    status = 422


class ForbiddenAddress(DownloadError):
    """The host resolves to an address downloads may not reach (loopback, private, ...)."""

    code = "forbidden_address"
    status = 403


class TooLarge(DownloadError):
    """The body is (or announces itself as) larger than ``DOWNLOAD_MAX_BYTES``."""

    code = "too_large"
    status = 413


class UpstreamTimeout(DownloadError):
    """The download did not finish within ``DOWNLOAD_TIMEOUT_SECONDS``."""

    code = "upstream_timeout"
    status = 504


class UpstreamError(DownloadError):
    """The upstream answered an error status, too many redirects, or could not be reached."""

    code = "upstream_error"
    status = 502

    def __init__(
        self, message: Text, *, code: str | None = None, upstream_status: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.upstream_status = upstream_status


class QueueFull(DownloadError):
    """As many downloads as allowed are already running and queued."""

    code = "too_many_downloads"
    status = 429

    def __init__(self, message: Text) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = "5"


class Cancelled(DownloadError):
    """The download was cancelled by its owner or by shutdown."""

    code = "cancelled"
    status = 409


class UserConcurrencyCap(DownloadError):
    """The user already has ``DOWNLOAD_USER_CONCURRENCY`` downloads running or queued."""

    code = "user_concurrency_cap"
    status = 429

    def __init__(self, limit: int, retry_after: int = 5) -> None:
        super().__init__(
            ntext(
                "at most {count} download at once per user; wait for yours to finish",
                "at most {count} downloads at once per user; wait for one of yours to finish",
                limit,
            )
        )
        self.headers["Retry-After"] = str(retry_after)


class UserDailyCap(DownloadError):
    """The user started ``DOWNLOAD_USER_DAILY`` downloads in the last 24 hours."""

    code = "user_daily_cap"
    status = 429

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            ntext(
                "at most {count} download per user in 24 hours; "
                "the next one is possible in {seconds} s",
                "at most {count} downloads per user in 24 hours; "
                "the next one is possible in {seconds} s",
                limit,
                seconds=retry_after,
            )
        )
        self.headers["Retry-After"] = str(retry_after)


class DiskCap(DownloadError):
    """The downloads directory holds, or a download would make it hold, more than
    ``DOWNLOAD_DISK_MAX_BYTES``."""

    code = "disk_cap"
    status = 507

    def __init__(self, limit: int, *, running: bool = False) -> None:
        super().__init__(
            Text(
                "the downloads directory may hold at most {limit} bytes; "
                "this download would fill it past that",
                limit=limit,
            )
            if running
            else Text(
                "the downloads directory may hold at most {limit} bytes; it already holds that",
                limit=limit,
            )
        )

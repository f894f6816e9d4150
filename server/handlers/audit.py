"""The audit log reader: ``GET /api/audit`` and the ``/admin/audit`` page (``audit.view``).

Both read the same query string (``AuditQuery``): exact ``actor`` and ``action``, a time range
``since``/``until`` (ISO 8601, UTC unless an offset is given) and keyset paging newest first
(``before`` an entry id, ``limit``). A bad value is 422 naming the parameter, never a 500.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, ClassVar
from urllib.parse import urlencode

from pydantic import Field, ValidationInfo, field_validator, model_validator

from repositories.audit import AuditRepository
from schemas.audit import AuditEntryRead, AuditPage
from schemas.common import ErrorItem
from schemas.text import Text
from server.errors import ApiError
from server.handlers.base import ApiHandler, PageHandler, QuerySchema
from server.openapi import Operation

AUDIT_URL = "/admin/audit"
MAX_LIMIT = 200
DATE_ONLY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
EARLIEST = dt.datetime(1000, 1, 1, tzinfo=dt.UTC)
"""The earliest bound accepted (MariaDB's DATETIME range starts there)."""
BAD_MOMENT = Text(
    "give an ISO 8601 date (2024-05-01) or date and time (2024-05-01T08:00:00Z) "
    "between the years 1000 and 9999"
)

AuditName = Annotated[str, Field(max_length=32)]


def utc_bound(value: str, *, end_of_day: bool) -> dt.datetime:
    """``value`` (an ISO 8601 date or datetime; naive means UTC) as an aware UTC datetime. A date
    means its midnight, or the next midnight when ``end_of_day`` (so ``until`` covers the day)."""
    try:
        if DATE_ONLY.match(value):
            moment = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
            if end_of_day:
                moment += dt.timedelta(days=1)
        else:
            moment = dt.datetime.fromisoformat(value)
            moment = (
                moment.replace(tzinfo=dt.UTC)
                if moment.tzinfo is None
                else moment.astimezone(dt.UTC)
            )
    except (ValueError, OverflowError):
        raise ValueError(BAD_MOMENT) from None
    if moment < EARLIEST:
        raise ValueError(BAD_MOMENT)
    return moment


class AuditQuery(QuerySchema):
    """``GET /api/audit?actor=&action=&since=&until=&before=&limit=``; empty values are unset."""

    actor: AuditName | None = Field(default=None, description="Exactly this name.")
    action: AuditName | None = Field(default=None, description="Exactly this action.")
    since: dt.datetime | None = Field(
        default=None, description="At or after this moment (a date: its midnight, UTC)."
    )
    until: dt.datetime | None = Field(
        default=None, description="Before this moment (a date: up to the end of that day, UTC)."
    )
    before: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = Field(
        default=None, description="Only entries with a smaller id: the previous `next_before`."
    )
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 50

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """A blank form field means "no filter"."""
        if isinstance(data, dict):
            return {name: value for name, value in data.items() if value != ""}
        return data

    @field_validator("since", "until", mode="before")
    @classmethod
    def _moment(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            return utc_bound(value, end_of_day=info.field_name == "until")
        return value

    @field_validator("until")
    @classmethod
    def _after_since(cls, value: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        since = info.data.get("since")
        if value is not None and since is not None and value <= since:
            raise ValueError(Text("must be later than since"))
        return value

    def filters(self) -> dict[str, Any]:
        """The repository's ``page`` arguments."""
        return self.model_dump()


class AuditHandler(ApiHandler):
    """``GET /api/audit``: the audit log, newest first, filtered and paged by id."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "The audit log, newest first",
            AuditPage,
            errors=(422,),
            description="Query parameters, all optional: `actor` and `action` (exact match, at "
            "most 32 characters); `since` (inclusive) and `until` (exclusive), each an ISO 8601 "
            "date or date and time, UTC unless an offset is given (a date `until` covers that "
            "whole day); `before`, an entry id: only older entries (pass the previous page's "
            "`next_before`); `limit`, 1 to 200 (default 50). A bad or repeated parameter is "
            "422 naming it.",
            tags=("audit",),
            query=AuditQuery,
        )
    }

    async def get(self) -> None:
        """One page of entries matching the filters."""
        query = self.query(AuditQuery)
        page = await AuditRepository(self.db).page(**query.filters())
        await self.respond(
            AuditPage(
                items=[AuditEntryRead.model_validate(entry) for entry in page.items],
                next_before=page.next_before,
            )
        )


class AuditPageHandler(PageHandler):
    """``GET /admin/audit``: the audit log as a filterable table, older pages by link."""

    FIELDS = ("actor", "action", "since", "until", "limit")
    """Parameters the page carries from one page to the next (``before`` is the position)."""

    async def get(self) -> None:
        """Render the filter form and one page of entries; bad filters re-show the form (422)
        naming each bad parameter."""
        typed = {name: self.get_query_argument(name, "", strip=False) for name in self.FIELDS}
        errors: list[ErrorItem] = []
        entries: list[AuditEntryRead] = []
        next_url = None
        try:
            query = self.query(AuditQuery)
        except ApiError as error:
            if error.status_code != 422:
                raise
            errors = [
                ErrorItem(field=problem.field, reason=self.text(problem.reason))
                for problem in error.errors
            ]
            self.set_status(422)
        else:
            page = await AuditRepository(self.db).page(**query.filters())
            entries = [AuditEntryRead.model_validate(entry) for entry in page.items]
            if page.next_before is not None:
                kept = {name: value for name, value in typed.items() if value}
                next_url = f"{AUDIT_URL}?{urlencode({**kept, 'before': page.next_before})}"
        first_url = None
        if self.get_query_argument("before", ""):
            kept = {name: value for name, value in typed.items() if value}
            first_url = f"{AUDIT_URL}?{urlencode(kept)}" if kept else AUDIT_URL
        await self.render_page(
            "admin/audit.html",
            typed=typed,
            errors=errors,
            entries=entries,
            next_url=next_url,
            first_url=first_url,
        )

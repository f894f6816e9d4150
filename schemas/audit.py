"""Schemas of the audit log reader (``GET /api/audit``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from schemas.common import Schema


class AuditEntryRead(Schema):
    """One audit entry: who did what, when, from where."""

    id: int
    created_at: dt.datetime = Field(description="When it happened (UTC).")
    action: str = Field(description="What happened, e.g. `login_failed`, `role_permissions`.")
    actor: str | None = Field(description="The name given (even an unknown one), or null.")
    user_id: int | None = Field(description="The account concerned, when known.")
    detail: str | None
    client_ip: str | None


class AuditPage(Schema):
    """A page of the audit log, newest first."""

    msg: Literal["success"] = "success"
    items: list[AuditEntryRead]
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )

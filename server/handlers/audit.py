"""The audit log reader: ``GET /api/audit`` and the ``/admin/audit`` page (``audit.view``)."""

from __future__ import annotations

from server.handlers.base import ApiHandler, PageHandler


class AuditHandler(ApiHandler):
    """``GET /api/audit``: placeholder, being built."""


class AuditPageHandler(PageHandler):
    """``GET /admin/audit``: placeholder, being built."""

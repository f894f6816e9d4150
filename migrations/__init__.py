"""Alembic migrations of the mservices schema (run them with ``mservices db upgrade``)."""

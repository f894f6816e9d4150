"""Data access: ORM models and async repositories, the only place SQL is built.

Repositories take an ``AsyncSession``, build queries and ``flush``; they never commit.
The caller (a request handler, a CLI command) owns the transaction.
"""

"""AuditRepository: entries read back newest first, filtered, and paged by id (both backends)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.audit import AuditRepository
from repositories.models import AuditEntry

DAY = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


async def add_entries(session: AsyncSession, *rows: tuple[str, str, dt.datetime]) -> list[int]:
    """Entries of (actor, action, created_at), in this order; their ids."""
    entries = [AuditEntry(actor=actor, action=action, created_at=at) for actor, action, at in rows]
    session.add_all(entries)
    await session.flush()
    await session.commit()
    return [entry.id for entry in entries]


async def test_a_page_lists_the_newest_entries_first(session: AsyncSession) -> None:
    ids = await add_entries(
        session, *[("alice", "login", DAY + dt.timedelta(minutes=n)) for n in range(3)]
    )
    page = await AuditRepository(session).page()
    assert [entry.id for entry in page.items] == ids[::-1]
    assert page.next_before is None


async def test_actor_and_action_match_exactly_and_combine(session: AsyncSession) -> None:
    ids = await add_entries(
        session,
        ("bob", "login", DAY),
        ("bobby", "login", DAY),
        ("bob", "logout", DAY),
        ("alice", "login", DAY),
    )
    audit = AuditRepository(session)
    assert [e.id for e in (await audit.page(actor="bob")).items] == [ids[2], ids[0]]
    assert [e.id for e in (await audit.page(action="login")).items] == [ids[3], ids[1], ids[0]]
    assert [e.id for e in (await audit.page(actor="bob", action="login")).items] == [ids[0]]
    assert (await audit.page(actor="bo")).items == []


async def test_since_is_inclusive_and_until_exclusive(session: AsyncSession) -> None:
    ids = await add_entries(
        session,
        ("a", "x", DAY - dt.timedelta(microseconds=1)),
        ("a", "x", DAY),
        ("a", "x", DAY + dt.timedelta(hours=23)),
        ("a", "x", DAY + dt.timedelta(days=1)),
    )
    page = await AuditRepository(session).page(since=DAY, until=DAY + dt.timedelta(days=1))
    assert [entry.id for entry in page.items] == [ids[2], ids[1]]


async def test_pages_continue_from_next_before_without_gap_or_duplicate(
    session: AsyncSession,
) -> None:
    ids = await add_entries(session, *[("a", "x", DAY) for _ in range(7)])
    audit = AuditRepository(session)
    seen: list[int] = []
    before = None
    pages = 0
    while True:
        page = await audit.page(before=before, limit=3)
        seen += [entry.id for entry in page.items]
        pages += 1
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == ids[::-1]
    assert pages == 3


async def test_a_page_that_ends_exactly_at_the_last_entry_says_there_is_no_next(
    session: AsyncSession,
) -> None:
    await add_entries(session, *[("a", "x", DAY) for _ in range(4)])
    audit = AuditRepository(session)
    first = await audit.page(limit=2)
    assert first.next_before == first.items[-1].id
    second = await audit.page(before=first.next_before, limit=2)
    assert len(second.items) == 2
    assert second.next_before is None

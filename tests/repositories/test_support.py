"""The support repository on SQLite and MariaDB: one open thread per customer, the status
following the newest message by id, and a closed thread storing nothing more."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.chat import ChatRepository, StoredMessage
from repositories.models import utcnow
from repositories.support import ANSWERED, CLOSED, NEW, WAITING, SupportRepository
from repositories.users import UserRepository

Sessions = async_sessionmaker[AsyncSession]


async def customer_and_agent(sessions: Sessions) -> tuple[int, int]:
    """Two users: a customer and an agent (rights are the policy's business, not this one's)."""
    async with sessions() as session, session.begin():
        users = UserRepository(session)
        carol = await users.add(name="carol", password_hash="x")
        ann = await users.add(name="ann", password_hash="x")
    return carol.id, ann.id


def message(thread_id: int, message_id: int, user: str, *, staff: bool = False) -> StoredMessage:
    """A message of thread ``thread_id`` with a chosen id."""
    return StoredMessage(
        id=message_id,
        room=f"support-{thread_id}",
        user=user,
        text=f"{user} {message_id}",
        created_at=utcnow(),
        staff=staff,
    )


async def test_a_customer_has_one_open_thread_and_a_new_one_after_it_is_closed(
    sessions: Sessions,
) -> None:
    carol, ann = await customer_and_agent(sessions)
    async with sessions() as session, session.begin():
        support = SupportRepository(session)
        first, created = await support.open_for(carol)
        again, created_again = await support.open_for(carol)
        assert (created, created_again) == (True, False) and again.id == first.id
        assert await support.close(first.id, ann)
        assert not await support.close(first.id, ann), "closed once"
        second, created_second = await support.open_for(carol)
    assert created_second and second.id > first.id


async def test_the_status_follows_the_newest_message_by_id(sessions: Sessions) -> None:
    carol, ann = await customer_and_agent(sessions)
    async with sessions() as session, session.begin():
        thread, _ = await SupportRepository(session).open_for(carol)
    states = []
    for message_id, user, agent in (
        (10, "carol", None),
        (30, "ann", ann),
        (20, "carol", None),  # older than the answer, stored after it
        (40, "carol", None),
        (50, "ann", ann),
    ):
        async with sessions() as session, session.begin():
            support = SupportRepository(session)
            stored = message(thread.id, message_id, user, staff=agent is not None)
            assert await support.add_message(thread.id, stored, agent_id=agent)
            view = await support.view(thread.id)
            assert view is not None
            states.append((view.thread.status, view.thread.last_message_id, view.thread.version))
    assert states == [
        (NEW, 10, 1),
        (ANSWERED, 30, 2),
        (ANSWERED, 30, 3),
        (WAITING, 40, 4),
        (ANSWERED, 50, 5),
    ]
    async with sessions() as session:
        view = await SupportRepository(session).view(thread.id)
        listed = await SupportRepository(session).list_open(limit=10)
    assert view is not None and view.thread.answered_by == ann
    assert view.last is not None and (view.last.user, view.last.staff) == ("ann", True)
    assert [item.thread.id for item in listed] == [thread.id]


async def test_a_closed_thread_stores_nothing_more_and_leaves_the_queue(
    sessions: Sessions,
) -> None:
    carol, ann = await customer_and_agent(sessions)
    async with sessions() as session, session.begin():
        support = SupportRepository(session)
        thread, _ = await support.open_for(carol)
        assert await support.list_open(limit=10) == [], "no message yet: not in the queue"
        assert await support.add_message(thread.id, message(thread.id, 1, "carol"), agent_id=None)
        assert await support.count_open() == 1
        assert await support.close(thread.id, ann)
        refused = await support.add_message(thread.id, message(thread.id, 2, "ann"), agent_id=ann)
        assert not await support.add_message(
            thread.id + 1000, message(thread.id + 1000, 3, "carol"), agent_id=None
        ), "no such thread"
        stored = await ChatRepository(session).recent(f"support-{thread.id}", limit=10)
        view = await support.view(thread.id)
        assert await support.count_open() == 0
    assert not refused
    assert [item.id for item in stored] == [1]
    assert view is not None and view.thread.status == CLOSED and view.thread.version == 2

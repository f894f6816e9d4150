"""OrderRepository: goods, placing orders, a user's orders newest first, status and reviews."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.errors import Conflict, NotFound
from repositories.models import Goods, User
from repositories.orders import ORDER_STATUSES, OrderRepository
from repositories.users import UserRepository
from tests.repositories.conftest import NO_SUCH_ID


async def add_user(session: AsyncSession, name: str) -> User:
    """A user to place orders."""
    return await UserRepository(session).add(name=name, password_hash="h")


async def add_goods(orders: OrderRepository, name: str, price: str = "9.99") -> Goods:
    """A goods item priced at ``price``."""
    return await orders.add_goods(name=name, author="someone", price=Decimal(price))


async def test_added_goods_read_back_by_id_and_by_name(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    added = await OrderRepository(session).add_goods(
        name="Dream of the Red Chamber", author="Cao Xueqin", price=Decimal("59.90")
    )
    await session.commit()

    async with sessions() as fresh:
        orders = OrderRepository(fresh)
        by_id = await orders.get_goods(added.id)
        by_name = await orders.get_goods_by_name("Dream of the Red Chamber")
    assert by_name is not None
    assert by_name.id == by_id.id == added.id
    assert (by_id.name, by_id.author, by_id.price) == (
        "Dream of the Red Chamber",
        "Cao Xueqin",
        Decimal("59.90"),
    )


async def test_goods_are_listed_by_id(session: AsyncSession) -> None:
    orders = OrderRepository(session)
    added = [await add_goods(orders, name) for name in ("zither", "abacus", "mooncake")]

    assert [goods.id for goods in await orders.list_goods()] == [goods.id for goods in added]


async def test_unknown_goods_are_not_found(session: AsyncSession) -> None:
    orders = OrderRepository(session)
    await add_goods(orders, "abacus")

    assert await orders.get_goods_by_name("abac") is None
    with pytest.raises(NotFound) as missing:
        await orders.get_goods(NO_SUCH_ID)

    assert missing.value.code == "goods_not_found"


@pytest.mark.parametrize(
    "price", ["0.00", "0.01", "0.10", "19.99", "100.00", "1234567.89", "99999999.99"]
)
async def test_decimal_prices_round_trip_exactly(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], price: str
) -> None:
    goods = await OrderRepository(session).add_goods(name="item", author=None, price=Decimal(price))
    await session.commit()

    async with sessions() as fresh:
        stored = (await OrderRepository(fresh).get_goods(goods.id)).price
    assert isinstance(stored, Decimal)
    assert str(stored) == price


async def test_a_placed_order_reads_back_with_its_defaults(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    abacus = await add_goods(orders, "abacus")
    before = dt.datetime.now(dt.UTC)
    placed = await orders.add(user_id=alice.id, goods_id=abacus.id)
    await session.commit()

    async with sessions() as fresh:
        order = await OrderRepository(fresh).get(placed.id)
    assert (order.user_id, order.goods_id, order.status, order.review) == (
        alice.id,
        abacus.id,
        "placed",
        None,
    )
    assert before <= order.created_at <= dt.datetime.now(dt.UTC)


async def test_ordering_unknown_goods_is_not_found(session: AsyncSession) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")

    with pytest.raises(NotFound) as missing:
        await orders.add(user_id=alice.id, goods_id=NO_SUCH_ID)

    assert missing.value.code == "goods_not_found"
    assert await orders.list_for_user(alice.id) == []


async def test_an_unknown_order_is_not_found(session: AsyncSession) -> None:
    orders = OrderRepository(session)

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: orders.get(NO_SUCH_ID),
        lambda: orders.set_status(NO_SUCH_ID, "cancelled"),
        lambda: orders.set_review(NO_SUCH_ID, 1, "great"),
    ]
    for call in calls:
        with pytest.raises(NotFound) as missing:
            await call()
        assert missing.value.code == "order_not_found"


async def test_a_users_orders_are_listed_newest_first_and_only_theirs(
    session: AsyncSession,
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    abacus = await add_goods(orders, "abacus")
    first = await orders.add(user_id=alice.id, goods_id=abacus.id)
    second = await orders.add(user_id=alice.id, goods_id=abacus.id)
    third = await orders.add(user_id=alice.id, goods_id=abacus.id)
    await orders.add(user_id=bob.id, goods_id=abacus.id)
    # Newest by time, not by id: the first order gets the latest timestamp.
    base = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    first.created_at = base + dt.timedelta(minutes=3)
    second.created_at = base + dt.timedelta(minutes=1)
    third.created_at = base + dt.timedelta(minutes=2)
    await session.flush()

    listed = await orders.list_for_user(alice.id)

    assert [order.id for order in listed] == [first.id, third.id, second.id]


async def test_orders_placed_at_the_same_moment_are_listed_newest_id_first(
    session: AsyncSession,
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    abacus = await add_goods(orders, "abacus")
    placed = [await orders.add(user_id=alice.id, goods_id=abacus.id) for _ in range(3)]
    moment = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    for order in placed:
        order.created_at = moment
    await session.flush()

    listed = await orders.list_for_user(alice.id)

    assert [order.id for order in listed] == [order.id for order in reversed(placed)]


@pytest.mark.parametrize("status", ORDER_STATUSES)
async def test_an_order_can_move_to_a_known_status(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], status: str
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    abacus = await add_goods(orders, "abacus")
    order = await orders.add(user_id=alice.id, goods_id=abacus.id)
    other = await orders.add(user_id=alice.id, goods_id=abacus.id)
    await orders.set_status(order.id, "cancelled" if status == "placed" else "placed")

    await orders.set_status(order.id, status)
    await session.commit()

    async with sessions() as fresh:
        assert (await OrderRepository(fresh).get(order.id)).status == status
        assert (await OrderRepository(fresh).get(other.id)).status == "placed"


async def test_an_unknown_status_is_refused(session: AsyncSession) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    order = await orders.add(user_id=alice.id, goods_id=(await add_goods(orders, "abacus")).id)

    with pytest.raises(ValueError, match="shipped"):
        await orders.set_status(order.id, "shipped")

    assert (await orders.get(order.id)).status == "placed"


async def test_a_review_is_attached_to_its_order(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    abacus = await add_goods(orders, "abacus")
    order = await orders.add(user_id=alice.id, goods_id=abacus.id)
    other = await orders.add(user_id=alice.id, goods_id=abacus.id)
    review = "Counts well. 好用！" * 200  # longer than any VARCHAR the table might have used

    reviewed, goods = await orders.set_review(order.id, alice.id, review)
    await session.commit()

    assert (reviewed.id, reviewed.review, goods.id) == (order.id, review, abacus.id)
    async with sessions() as fresh:
        assert (await OrderRepository(fresh).get(order.id)).review == review
        assert (await OrderRepository(fresh).get(other.id)).review is None


async def test_an_order_cancelled_after_it_was_read_cannot_be_reviewed(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    order = await orders.add(user_id=alice.id, goods_id=(await add_goods(orders, "abacus")).id)
    await session.commit()
    seen, _ = await orders.get_owned(order.id, alice.id)  # the reviewer reads it: placed
    assert seen.status == "placed"

    async with sessions() as other:  # a cancel lands before the review is written
        await OrderRepository(other).cancel(order.id, alice.id)
        await other.commit()
    with pytest.raises(Conflict) as refused:
        await orders.set_review(order.id, alice.id, "late")
    await session.commit()

    assert refused.value.code == "order_cancelled"
    async with sessions() as fresh:
        stored = await OrderRepository(fresh).get(order.id)
    assert (stored.status, stored.review) == ("cancelled", None)


async def test_goods_with_orders_cannot_be_deleted(session: AsyncSession) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    abacus = await add_goods(orders, "abacus")
    await orders.add(user_id=alice.id, goods_id=abacus.id)
    await session.commit()

    await session.delete(abacus)
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_deleting_a_user_deletes_their_orders_but_not_the_goods(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    abacus = await add_goods(orders, "abacus")
    await orders.add(user_id=alice.id, goods_id=abacus.id)
    bobs = await orders.add(user_id=bob.id, goods_id=abacus.id)
    await session.commit()

    await session.delete(alice)
    await session.commit()

    async with sessions() as fresh:
        repository = OrderRepository(fresh)
        assert await repository.list_for_user(alice.id) == []
        assert [order.id for order in await repository.list_for_user(bob.id)] == [bobs.id]
        assert [goods.id for goods in await repository.list_goods()] == [abacus.id]


async def test_an_owned_order_reads_back_with_its_goods_and_no_one_elses(
    session: AsyncSession,
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    abacus = await add_goods(orders, "abacus", "12.50")
    order = await orders.add(user_id=alice.id, goods_id=abacus.id)

    owned, goods = await orders.get_owned(order.id, alice.id)

    assert (owned.id, goods.id, goods.price) == (order.id, abacus.id, Decimal("12.50"))
    for order_id, user_id in ((order.id, bob.id), (NO_SUCH_ID, alice.id)):
        with pytest.raises(NotFound) as missing:
            await orders.get_owned(order_id, user_id)
        assert missing.value.code == "order_not_found"


async def test_orders_with_goods_are_listed_newest_first_limited_and_counted(
    session: AsyncSession,
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    abacus = await add_goods(orders, "abacus")
    zither = await add_goods(orders, "zither")
    placed = [
        await orders.add(user_id=alice.id, goods_id=goods.id) for goods in (abacus, zither, abacus)
    ]
    await orders.add(user_id=bob.id, goods_id=zither.id)

    listed = await orders.list_with_goods(alice.id, limit=2)

    assert [(order.id, goods.name) for order, goods in listed] == [
        (placed[2].id, "abacus"),
        (placed[1].id, "zither"),
    ]
    assert await orders.count_for_user(alice.id) == 3
    assert await orders.count_for_user(bob.id) == 1
    assert await orders.list_with_goods(NO_SUCH_ID, limit=5) == []
    assert await orders.count_for_user(NO_SUCH_ID) == 0


async def test_cancel_cancels_a_placed_order_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    abacus = await add_goods(orders, "abacus")
    order = await orders.add(user_id=alice.id, goods_id=abacus.id)
    other = await orders.add(user_id=alice.id, goods_id=abacus.id)

    cancelled, goods = await orders.cancel(order.id, alice.id)

    assert (cancelled.status, goods.id) == ("cancelled", abacus.id)
    with pytest.raises(Conflict) as twice:
        await orders.cancel(order.id, alice.id)
    assert twice.value.code == "order_already_cancelled"
    await session.commit()
    async with sessions() as fresh:
        assert (await OrderRepository(fresh).get(order.id)).status == "cancelled"
        assert (await OrderRepository(fresh).get(other.id)).status == "placed"


@pytest.mark.parametrize("action", ["cancel", "review"])
async def test_cancelling_or_reviewing_another_users_or_a_missing_order_is_not_found(
    session: AsyncSession, action: str
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    order = await orders.add(user_id=alice.id, goods_id=(await add_goods(orders, "abacus")).id)

    for order_id, user_id in ((order.id, bob.id), (NO_SUCH_ID, alice.id)):
        with pytest.raises(NotFound) as missing:
            if action == "cancel":
                await orders.cancel(order_id, user_id)
            else:
                await orders.set_review(order_id, user_id, "mine?")
        assert missing.value.code == "order_not_found"

    stored = await orders.get(order.id)
    assert (stored.status, stored.review) == ("placed", None)


async def test_search_finds_everyones_orders_or_one_users_newest_first_and_counts_them(
    session: AsyncSession,
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    abacus = await add_goods(orders, "abacus")
    first = await orders.add(user_id=alice.id, goods_id=abacus.id)
    second = await orders.add(user_id=bob.id, goods_id=abacus.id)
    third = await orders.add(user_id=alice.id, goods_id=abacus.id)

    everyone = await orders.search(limit=2)
    alices = await orders.search(user_name="alice", limit=10)

    assert [(order.id, owner) for order, _, owner in everyone] == [
        (third.id, "alice"),
        (second.id, "bob"),
    ]
    assert [order.id for order, _, _ in alices] == [third.id, first.id]
    assert all(goods.id == abacus.id for _, goods, _ in alices)
    assert await orders.count_matching() == 3
    assert await orders.count_matching(user_name="alice") == 2
    assert await orders.count_matching(user_name="nobody") == 0
    assert await orders.search(user_name="nobody", limit=10) == []


async def test_a_second_review_is_a_conflict_unless_it_says_it_replaces_the_first(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    orders = OrderRepository(session)
    alice = await add_user(session, "alice")
    order = await orders.add(user_id=alice.id, goods_id=(await add_goods(orders, "abacus")).id)
    await orders.set_review(order.id, alice.id, "first")
    await session.commit()

    with pytest.raises(Conflict) as refused:
        await orders.set_review(order.id, alice.id, "blind second")
    await session.commit()
    assert refused.value.code == "already_reviewed"
    async with sessions() as fresh:
        assert (await OrderRepository(fresh).get(order.id)).review == "first"

    replaced, _ = await orders.set_review(order.id, alice.id, "second", replace=True)
    await session.commit()
    assert replaced.review == "second"
    async with sessions() as fresh:
        assert (await OrderRepository(fresh).get(order.id)).review == "second"

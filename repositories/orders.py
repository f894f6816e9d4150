"""The order repository: goods and the orders users place on them (seed §2)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.errors import Conflict, NotFound
from repositories.models import Goods, Order, User
from schemas.text import Text

ORDER_STATUSES = ("placed", "cancelled")
CANCELLED_REVIEW = Text("a cancelled order cannot be reviewed")


def order_not_found(order_id: int | str) -> NotFound:
    """The refusal of an order that does not exist (or is not the caller's)."""
    return NotFound(Text("order {id} does not exist", id=order_id), code="order_not_found")


class OrderRepository:
    """Goods and orders: listing, placing, cancelling, reviewing."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_goods(self) -> Sequence[Goods]:
        """Every goods item, by id."""
        return (await self.session.scalars(select(Goods).order_by(Goods.id))).all()

    async def get_goods(self, goods_id: int) -> Goods:
        """The goods item with this id, or NotFound."""
        goods = await self.session.get(Goods, goods_id)
        if goods is None:
            raise NotFound(Text("goods {id} does not exist", id=goods_id), code="goods_not_found")
        return goods

    async def get_goods_by_name(self, name: str) -> Goods | None:
        """The goods item with this name, or None."""
        return await self.session.scalar(select(Goods).where(Goods.name == name).limit(1))

    async def add_goods(self, *, name: str, author: str | None, price: Decimal) -> Goods:
        """Create a goods item."""
        goods = Goods(name=name, author=author, price=price)
        self.session.add(goods)
        await self.session.flush()
        return goods

    async def get(self, order_id: int) -> Order:
        """The order with this id, or NotFound."""
        order = await self.session.get(Order, order_id)
        if order is None:
            raise order_not_found(order_id)
        return order

    async def get_owned(self, order_id: int, user_id: int) -> tuple[Order, Goods]:
        """The user's order with this id and its goods; another user's order is NotFound too,
        so its existence is not revealed."""
        query = (
            select(Order, Goods)
            .join(Goods, Goods.id == Order.goods_id)
            .where(Order.id == order_id, Order.user_id == user_id)
        )
        row = (await self.session.execute(query)).first()
        if row is None:
            raise order_not_found(order_id)
        order, goods = row
        return order, goods

    async def list_with_goods(self, user_id: int, *, limit: int) -> list[tuple[Order, Goods]]:
        """The user's newest ``limit`` orders, each with its goods."""
        query = (
            select(Order, Goods)
            .join(Goods, Goods.id == Order.goods_id)
            .where(Order.user_id == user_id)
            .order_by(Order.created_at.desc(), Order.id.desc())
            .limit(limit)
        )
        return [(order, goods) for order, goods in await self.session.execute(query)]

    async def search(
        self, *, user_name: str | None = None, limit: int
    ) -> list[tuple[Order, Goods, str]]:
        """The newest ``limit`` orders of every user (or only ``user_name``'s), each with its
        goods and its owner's name: the staff's order lookup."""
        query = (
            select(Order, Goods, User.name)
            .join(Goods, Goods.id == Order.goods_id)
            .join(User, User.id == Order.user_id)
            .order_by(Order.created_at.desc(), Order.id.desc())
            .limit(limit)
        )
        if user_name is not None:
            query = query.where(User.name == user_name)
        return [(order, goods, name) for order, goods, name in await self.session.execute(query)]

    async def count_matching(self, *, user_name: str | None = None) -> int:
        """How many orders ``search`` would find without its limit."""
        query = select(func.count()).select_from(Order)
        if user_name is not None:
            query = query.join(User, User.id == Order.user_id).where(User.name == user_name)
        return int(await self.session.scalar(query) or 0)

    async def count_for_user(self, user_id: int) -> int:
        """How many orders the user has."""
        query = select(func.count()).select_from(Order).where(Order.user_id == user_id)
        return int(await self.session.scalar(query) or 0)

    async def cancel(self, order_id: int, user_id: int) -> tuple[Order, Goods]:
        """Cancel the user's placed order in one conditional UPDATE (two concurrent cancels
        cannot both succeed); an order already cancelled is a Conflict, another user's or a
        missing one NotFound."""
        statement = (
            update(Order)
            .where(Order.id == order_id, Order.user_id == user_id, Order.status == "placed")
            .values(status="cancelled")
            .execution_options(synchronize_session=False)
        )
        result = cast(CursorResult[Any], await self.session.execute(statement))
        order, goods = await self.get_owned(order_id, user_id)
        if result.rowcount == 0:
            raise Conflict(
                Text("order {id} is already cancelled", id=order_id),
                code="order_already_cancelled",
            )
        await self.session.refresh(order, ["status"])
        return order, goods

    async def list_for_user(self, user_id: int) -> Sequence[Order]:
        """The user's orders, newest first."""
        query = (
            select(Order)
            .where(Order.user_id == user_id)
            .order_by(Order.created_at.desc(), Order.id.desc())
        )
        return (await self.session.scalars(query)).all()

    async def add(self, *, user_id: int, goods_id: int) -> Order:
        """Place an order for one goods item."""
        await self.get_goods(goods_id)
        order = Order(user_id=user_id, goods_id=goods_id, status="placed")
        self.session.add(order)
        await self.session.flush()
        return order

    async def set_status(self, order_id: int, status: str) -> Order:
        """Move an order to ``status`` (one of ORDER_STATUSES)."""
        if status not in ORDER_STATUSES:
            raise ValueError(f"unknown order status {status!r}")
        order = await self.get(order_id)
        order.status = status
        await self.session.flush()
        return order

    async def set_review(
        self, order_id: int, user_id: int, review: str, *, replace: bool = False
    ) -> tuple[Order, Goods]:
        """Attach the user's review to their placed order in one conditional UPDATE (a cancel
        or another review landing after the order was read cannot be overtaken); a cancelled
        order is a Conflict (``order_cancelled``), and so is an order already reviewed unless
        ``replace`` says to replace that review (``already_reviewed``); another user's or a
        missing order is NotFound."""
        conditions = [Order.id == order_id, Order.user_id == user_id, Order.status == "placed"]
        if not replace:
            conditions.append(Order.review.is_(None))
        statement = (
            update(Order)
            .where(*conditions)
            .values(review=review)
            .execution_options(synchronize_session=False)
        )
        result = cast(CursorResult[Any], await self.session.execute(statement))
        order, goods = await self.get_owned(order_id, user_id)
        if result.rowcount == 0:
            await self.session.refresh(order, ["status", "review"])
            if order.status == "cancelled":
                raise Conflict(CANCELLED_REVIEW, code="order_cancelled")
            raise Conflict(
                Text('the order already has a review; send "replace": true to replace it'),
                code="already_reviewed",
            )
        await self.session.refresh(order, ["status", "review"])
        return order, goods

"""The order repository: goods and the orders users place on them (seed §2)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.errors import NotFound
from repositories.models import Goods, Order

ORDER_STATUSES = ("placed", "cancelled")


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
            raise NotFound(f"goods {goods_id} does not exist", code="goods_not_found")
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
            raise NotFound(f"order {order_id} does not exist", code="order_not_found")
        return order

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

    async def set_review(self, order_id: int, review: str) -> Order:
        """Attach the user's review to an order."""
        order = await self.get(order_id)
        order.review = review
        await self.session.flush()
        return order

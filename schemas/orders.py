"""Schemas of orders (seed §2): an order as read, the list, and a review."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from schemas.common import RequestSchema, Schema

OrderStatus = Literal["placed", "cancelled"]

MAX_REVIEW = 2000

ReviewText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REVIEW)
]
"""1 to 2,000 characters once surrounding spaces are removed."""


class OrderRead(Schema):
    """One order with the goods it is for."""

    id: int
    goods_id: int
    goods_name: str
    price: Decimal
    status: OrderStatus
    review: str | None
    created_at: dt.datetime


class OrderList(Schema):
    """The caller's orders, newest first."""

    msg: Literal["success"] = "success"
    items: list[OrderRead]
    count: int = Field(description="How many orders the caller has (items holds the newest).")


class OrderResponse(Schema):
    """One order after an action (or as shown by ``GET``)."""

    msg: Literal["success"] = "success"
    order: OrderRead


class OrderReview(RequestSchema):
    """``POST /order/3/{id}``: the review of an order."""

    review: ReviewText
    replace: bool = Field(
        default=False,
        description="Replace the order's existing review; without it a second review is 409 "
        "``already_reviewed``.",
    )

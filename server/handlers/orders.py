"""Orders (seed §2): ``GET /api/orders``, the ``/orders`` page, and the seed's
``/order/{action_code}/{order_id}`` actions: 1 cancel, 2 buy again, 3 review.

Orders are the caller's own, so any logged-in user may open theirs (the ``/orders`` menu only
publishes the link). Another user's order answers 404 exactly like one that does not exist, so
ids reveal nothing. An action page is HTML by default and JSON when the client sends
``Accept: application/json``; ``GET`` shows the order and the action's form, ``POST`` performs it
(cancelling twice is 409, reviewing a cancelled order is 409, an unknown action 400). A review
replaces an existing one only when asked: ``{"review", "replace": true}`` in JSON, ``replace=1``
from the form (which shows the current review); a blind second review is 409 ``already_reviewed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NoReturn

from repositories.errors import Conflict
from repositories.models import Goods, Order
from repositories.orders import CANCELLED_REVIEW, OrderRepository, order_not_found
from schemas.orders import OrderList, OrderRead, OrderResponse, OrderReview
from schemas.text import Text
from server.errors import ApiError
from server.handlers.base import ApiHandler, PageHandler
from server.logins import Login
from server.openapi import Operation
from server.permissions import Requirement
from server.services import Services

MAX_LISTED = 200
"""``/api/orders`` and ``/orders`` show the newest this many orders (``count`` is the total)."""
"""The staff's order lookup: its menu grants the page."""
MAX_NAME_CHARS = 64
"""A longer ``?user=`` cannot be anybody's name; it is cut rather than sent to the database."""
MAX_ID = 2**31 - 1
"""Ids beyond the column's range cannot exist (and would overflow the driver)."""


@dataclass(frozen=True, slots=True)
class OrderAction:
    """One of the seed's order actions."""

    code: int
    name: str
    label: Text


CANCEL = OrderAction(1, "cancel", Text("Cancel order"))
BUY_AGAIN = OrderAction(2, "buy_again", Text("Buy again"))
REVIEW = OrderAction(3, "review", Text("Review"))
ACTIONS = {action.code: action for action in (CANCEL, BUY_AGAIN, REVIEW)}


def order_read(order: Order, goods: Goods) -> OrderRead:
    """An order and its goods as the API shows them."""
    return OrderRead.model_validate(
        {
            "id": order.id,
            "goods_id": goods.id,
            "goods_name": goods.name,
            "price": goods.price,
            "status": order.status,
            "review": order.review,
            "created_at": order.created_at,
        }
    )


def order_number(order_id: str) -> int:
    """The order id of the URL; one beyond the column's range is NotFound."""
    number = int(order_id) if len(order_id) <= len(str(MAX_ID)) else MAX_ID + 1
    if number > MAX_ID:
        raise order_not_found(order_id)
    return number


def wants_json(accept: str) -> bool:
    """True when an ``Accept`` header lists ``application/json``."""
    return any(
        part.split(";")[0].strip().lower() == "application/json" for part in accept.split(",")
    )


async def list_orders(handler: ApiHandler | PageHandler, login: Login) -> OrderList:
    """The caller's newest orders and how many they have."""
    orders = OrderRepository(handler.db)
    user_id = login.principal.user_id
    rows = await orders.list_with_goods(user_id, limit=MAX_LISTED)
    return OrderList(
        items=[order_read(order, goods) for order, goods in rows],
        count=await orders.count_for_user(user_id),
    )


class OrdersApiHandler(ApiHandler):
    """``GET /api/orders``: the caller's orders, newest first (bearer token or session)."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            f"The caller's orders, newest first (at most {MAX_LISTED})",
            OrderList,
            tags=("orders",),
        )
    }

    async def get(self) -> None:
        """List the caller's orders."""
        await self.respond(await list_orders(self, self.current_login()))


class OrdersPageHandler(PageHandler):
    """``GET /orders``: the caller's orders with links to the seed's action URLs."""

    async def get(self) -> None:
        """Render ``orders.html``."""
        listed = await list_orders(self, self.current_login())
        await self.render_page("orders.html", orders=listed.items, count=listed.count)


class OrderLookupPageHandler(PageHandler):
    """``GET /admin/orders?user=NAME`` (the seed's 订单查询 menu): every user's orders, or one
    user's, newest first, for the staff whose roles grant that menu."""

    async def get(self) -> None:
        """Render ``admin/orders.html``."""
        user_name = self.get_query_argument("user", "").strip()[:MAX_NAME_CHARS] or None
        orders = OrderRepository(self.db)
        rows = await orders.search(user_name=user_name, limit=MAX_LISTED)
        await self.render_page(
            "admin/orders.html",
            orders=[(order_read(order, goods), owner) for order, goods, owner in rows],
            count=await orders.count_matching(user_name=user_name),
            user_name=user_name or "",
        )


class OrderActionHandler(PageHandler, ApiHandler):
    """``/order/{action_code}/{order_id}`` (seed §2): GET shows the order and the action's form,
    POST performs the action; HTML, or JSON for ``Accept: application/json``.

    It is a page and an API at once: authentication, CORS and the XSRF rule come from
    ``ApiHandler`` (a bearer token needs no XSRF token), rendering from ``PageHandler``; ``api``
    is decided per request, so errors are the JSON envelope or the HTML error page."""

    def initialize(self, services: Services, need: Requirement) -> None:
        """Receive the services; decide between JSON and HTML from ``Accept``."""
        super().initialize(services, need)
        self.api = wants_json(self.request.headers.get("Accept", ""))

    def login_required(self) -> NoReturn:
        """401 for a JSON client; the login form for a browser."""
        if self.api:
            ApiHandler.login_required(self)
        PageHandler.login_required(self)

    def action(self, action_code: str) -> OrderAction:
        """The action with this code, or 400."""
        action = ACTIONS.get(int(action_code)) if len(action_code) < 4 else None
        if action is None:
            known = ", ".join(f"{code} {action.name}" for code, action in ACTIONS.items())
            raise ApiError(
                400, "unknown_action", Text("unknown order action; use {actions}", actions=known)
            )
        return action

    async def owned(self, order_id: str, login: Login) -> tuple[Order, Goods]:
        """The caller's order with this id (another user's is 404 too)."""
        return await OrderRepository(self.db).get_owned(
            order_number(order_id), login.principal.user_id
        )

    async def show(
        self, order: OrderRead, action: OrderAction, *, error: str | None = None, review: str = ""
    ) -> None:
        """The order and the action's form (with the reason a review was refused, if any)."""
        await self.render_page("order.html", order=order, action=action, error=error, review=review)

    async def get(self, action_code: str, order_id: str) -> None:
        """Show the order (JSON: ``OrderResponse``) and, in HTML, the action's form."""
        login = self.current_login()
        action = self.action(action_code)
        order = order_read(*await self.owned(order_id, login))
        if self.api:
            await self.respond(OrderResponse(order=order))
            return
        await self.show(order, action, review=order.review or "")

    async def post(self, action_code: str, order_id: str) -> None:
        """Cancel (200), buy again (201, the new order) or review (200) the caller's order."""
        login = self.current_login()
        action = self.action(action_code)
        if action is CANCEL:
            order, goods = await OrderRepository(self.db).cancel(
                order_number(order_id), login.principal.user_id
            )
            await self.done(order_read(order, goods), Text("The order has been cancelled"))
        elif action is BUY_AGAIN:
            order, goods = await self.owned(order_id, login)
            again = await OrderRepository(self.db).add(
                user_id=login.principal.user_id, goods_id=goods.id
            )
            bought = Text("Bought {goods} again", goods=goods.name)
            await self.done(order_read(again, goods), bought, status=201)
        else:
            await self.review(*await self.owned(order_id, login))

    async def review(self, order: Order, goods: Goods) -> None:
        """Store the caller's review of a placed order (a cancelled one is 409, also when the
        cancel lands after this read: the write itself is conditional)."""
        if order.status == "cancelled":
            raise Conflict(CANCELLED_REVIEW, code="order_cancelled")
        if self.api:
            body = self.parse(OrderReview)
            text, replace = body.review, body.replace
        else:
            typed = self.get_body_argument("review", "")
            replace = self.get_body_argument("replace", "") == "1"
            try:
                text = self.validate(OrderReview, {"review": typed}).review
            except ApiError as refused:
                self.set_status(refused.status_code)
                reasons = [self.text(item.reason) for item in refused.errors]
                reason = "; ".join(reasons) or self.text(refused.msg)
                await self.show(order_read(order, goods), REVIEW, error=reason, review=typed)
                return
        try:
            reviewed, goods = await OrderRepository(self.db).set_review(
                order.id, order.user_id, text, replace=replace
            )
        except Conflict as conflict:
            if self.api or conflict.code != "already_reviewed":
                raise
            # Reviewed meanwhile (another tab): show the review now stored, keep what was typed.
            current, goods = await OrderRepository(self.db).get_owned(order.id, order.user_id)
            self.set_status(409)
            error = self.text(
                Text("This order already has a review (see above); submit again to replace it")
            )
            await self.show(order_read(current, goods), REVIEW, error=error, review=typed)
            return
        await self.done(order_read(reviewed, goods), Text("The review has been saved"))

    async def done(self, order: OrderRead, message: Text, *, status: int = 200) -> None:
        """JSON: the order; HTML: back to the list with a flash message."""
        if self.api:
            await self.respond(OrderResponse(order=order), status=status)
            return
        self.flash(message)
        self.redirect_to("/orders")

"""Orders (seed §2): GET /api/orders, the /orders page and /order/{action}/{id}: cancel, buy
again, review; owner only, every refusal, HTML for browsers and JSON on request."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest

from repositories.orders import OrderRepository
from repositories.users import UserRepository
from server.permissions import ORDERS_USE
from server.services import Services
from tests.conftest import Client, Response
from tests.grants import grant
from tests.server.handlers.test_admin_api import assert_error
from tests.server.handlers.test_admin_pages import Browser
from tests.server.handlers.test_user import PASSWORD, bearer, login, register

JSON = {"Accept": "application/json"}
ENGLISH = {"Accept-Language": "en"}
CHINESE = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
"""Han characters and CJK punctuation."""


def chinese_in(html: str) -> list[str]:
    """The Chinese left in a page's own part (``<main>``)."""
    return CHINESE.findall(html.split("<main", 1)[1].split("</main>", 1)[0])


def in_english(browser: Browser) -> Browser:
    """``browser`` with the language switch set to English (the ``mservices_lang`` cookie)."""
    browser.cookies["mservices_lang"] = "en_US"
    return browser


async def place(services: Services, name: str, goods: str, count: int = 1) -> list[int]:
    """``count`` orders of ``goods`` (created if missing) for the user ``name``."""
    async with services.sessions() as session, session.begin():
        orders = OrderRepository(session)
        item = await orders.get_goods_by_name(goods) or await orders.add_goods(
            name=goods, author="cxk", price=Decimal("190.00")
        )
        user = await UserRepository(session).get_by_name(name)
        assert user is not None
        placed = [await orders.add(user_id=user.id, goods_id=item.id) for _ in range(count)]
        return [order.id for order in placed]


@pytest.fixture
async def alice(client: Client, services: Services) -> str:
    """The token of alice, who may use orders and has none yet."""
    await register(client, "alice")
    await grant(services, "alice", ORDERS_USE)
    return await login(client, "alice")


async def act(client: Client, token: str, action: int, order_id: int, body: Any = None) -> Response:
    """POST one order action as a JSON client."""
    return await client.post(
        f"/order/{action}/{order_id}",
        json_body=body,
        body=None if body is not None else b"",
        headers={**bearer(token), **JSON},
    )


async def listed(client: Client, token: str) -> dict[str, Any]:
    response = await client.get("/api/orders", headers=bearer(token))
    assert response.status == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- GET /api/orders and the /orders page ------------------------------------------------------


async def test_the_api_lists_only_the_callers_orders_newest_first(
    client: Client, services: Services, alice: str
) -> None:
    await register(client, "bob")
    first, second = await place(services, "alice", "Python高级开发", 2)
    await place(services, "bob", "Python高级开发")

    body = await listed(client, alice)

    assert body["count"] == 2
    assert [item["id"] for item in body["items"]] == [second, first]
    assert body["items"][0] | {"created_at": None} == {
        "id": second,
        "goods_id": body["items"][0]["goods_id"],
        "goods_name": "Python高级开发",
        "price": "190.00",
        "status": "placed",
        "review": None,
        "created_at": None,
    }


async def test_the_api_needs_a_login(client: Client) -> None:
    assert_error(await client.get("/api/orders"), 401, "not_authenticated")
    assert_error(await client.get("/api/orders", headers=bearer("nope")), 401, "invalid_token")


async def test_a_user_whose_roles_do_not_grant_orders_use_is_403(
    client: Client, services: Services
) -> None:
    await register(client, "bob")
    (bobs,) = await place(services, "bob", "abacus")
    token = await login(client, "bob")

    assert_error(await client.get("/api/orders", headers=bearer(token)), 403, "permission_required")
    assert_error(await act(client, token, 1, bobs), 403, "permission_required")
    browser = Browser(client)
    await browser.login("bob", PASSWORD)
    assert (await browser.get("/orders")).status == 403
    await grant(services, "bob", ORDERS_USE)
    assert (await listed(client, token))["items"][0]["status"] == "placed"


async def test_the_orders_page_lists_the_callers_orders_escaped(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "<b>Tornado</b>")
    browser = Browser(client)
    await browser.login("alice", PASSWORD)

    page = await browser.get("/orders")

    assert page.status == 200
    assert "&lt;b&gt;Tornado&lt;/b&gt;" in page.text and "<b>Tornado</b>" not in page.text
    for action in (1, 2, 3):
        assert f'href="/order/{action}/{order_id}"' in page.text


async def test_the_orders_page_sends_visitors_to_the_login_form(client: Client) -> None:
    response = await client.get("/orders")

    assert response.status == 302
    assert response.headers["Location"] == "/login?next=%2Forders"


# -- the actions as JSON ---------------------------------------------------------------------


async def test_cancel_cancels_once_then_is_409(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")

    response = await act(client, alice, 1, order_id)

    assert response.status == 200, response.text
    assert response.json()["order"]["status"] == "cancelled"
    assert (await listed(client, alice))["items"][0]["status"] == "cancelled"
    assert_error(await act(client, alice, 1, order_id), 409, "order_already_cancelled")


async def test_refusals_are_chinese_by_default_and_english_on_request(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    await act(client, alice, 1, order_id)

    again = assert_error(await act(client, alice, 1, order_id), 409, "order_already_cancelled")
    english = await client.post(
        f"/order/1/{order_id}", body=b"", headers={**bearer(alice), **JSON, **ENGLISH}
    )

    assert again["msg"] == f"订单 {order_id} 已经取消了"
    body = assert_error(english, 409, "order_already_cancelled")
    assert body["msg"] == f"order {order_id} is already cancelled"
    unknown = await client.post(
        f"/order/9/{order_id}", body=b"", headers={**bearer(alice), **JSON, **ENGLISH}
    )
    assert assert_error(unknown, 400, "unknown_action")["msg"] == (
        "unknown order action; use 1 cancel, 2 buy_again, 3 review"
    )
    review = await act(client, alice, 3, order_id, {"review": "late"})
    assert assert_error(review, 409, "order_cancelled")["msg"] == "已取消的订单不能评价"


async def test_buy_again_places_a_new_order_for_the_same_goods(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    await act(client, alice, 1, order_id)

    response = await act(client, alice, 2, order_id)

    assert response.status == 201, response.text
    again = response.json()["order"]
    assert again["id"] != order_id
    assert (again["goods_name"], again["status"]) == ("abacus", "placed")
    assert [item["id"] for item in (await listed(client, alice))["items"]] == [
        again["id"],
        order_id,
    ]


async def test_a_review_is_stored_stripped(client: Client, services: Services, alice: str) -> None:
    (order_id,) = await place(services, "alice", "abacus")

    response = await act(client, alice, 3, order_id, {"review": "  好用！ "})

    assert response.status == 200, response.text
    assert response.json()["order"]["review"] == "好用！"
    shown = await client.get(f"/order/3/{order_id}", headers={**bearer(alice), **JSON})
    assert shown.json()["order"]["review"] == "好用！"


async def test_a_blind_second_review_is_409_and_replace_true_replaces_it(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    assert (await act(client, alice, 3, order_id, {"review": "first"})).status == 200

    blind = await act(client, alice, 3, order_id, {"review": "second"})

    assert_error(blind, 409, "already_reviewed")
    assert (await listed(client, alice))["items"][0]["review"] == "first"
    replaced = await act(client, alice, 3, order_id, {"review": "second", "replace": True})
    assert replaced.status == 200, replaced.text
    assert (await listed(client, alice))["items"][0]["review"] == "second"


@pytest.mark.parametrize(
    "body",
    [{"review": ""}, {"review": "   "}, {"review": "x" * 2001}, {"review": "ok", "x": 1}, {}],
)
async def test_an_invalid_review_is_422_and_stores_nothing(
    client: Client, services: Services, alice: str, body: dict[str, Any]
) -> None:
    (order_id,) = await place(services, "alice", "abacus")

    assert_error(await act(client, alice, 3, order_id, body), 422, "validation_error")
    assert (await listed(client, alice))["items"][0]["review"] is None


async def test_a_review_that_is_not_json_is_415(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")

    assert_error(await act(client, alice, 3, order_id), 415, "unsupported_media_type")


async def test_a_cancelled_order_cannot_be_reviewed(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    await act(client, alice, 1, order_id)

    assert_error(await act(client, alice, 3, order_id, {"review": "late"}), 409, "order_cancelled")


@pytest.mark.parametrize("action", [0, 4, 99, 10**40])
async def test_an_unknown_action_is_400(
    client: Client, services: Services, alice: str, action: int
) -> None:
    (order_id,) = await place(services, "alice", "abacus")

    assert_error(await act(client, alice, action, order_id), 400, "unknown_action")
    get = await client.get(f"/order/{action}/{order_id}", headers={**bearer(alice), **JSON})
    assert_error(get, 400, "unknown_action")


@pytest.mark.parametrize("action", [1, 2, 3])
@pytest.mark.parametrize("whose", ["missing", "huge", "bobs"])
async def test_an_unknown_or_another_users_order_is_404(
    client: Client, services: Services, alice: str, action: int, whose: str
) -> None:
    await register(client, "bob")
    (bobs,) = await place(services, "bob", "abacus")
    order_id = {"missing": bobs + 1000, "huge": 10**30, "bobs": bobs}[whose]
    body = {"review": "mine?"} if action == 3 else None

    assert_error(await act(client, alice, action, order_id, body), 404, "order_not_found")
    get = await client.get(f"/order/{action}/{order_id}", headers={**bearer(alice), **JSON})
    assert_error(get, 404, "order_not_found")
    await grant(services, "bob", ORDERS_USE)
    bob = await login(client, "bob")
    assert (await listed(client, bob))["items"][0] | {"created_at": None, "goods_id": 0} == {
        "id": bobs,
        "goods_id": 0,
        "goods_name": "abacus",
        "price": "190.00",
        "status": "placed",
        "review": None,
        "created_at": None,
    }
    assert (await listed(client, alice))["count"] == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_anonymous_json_client_is_401_and_a_browser_goes_to_login(
    client: Client, services: Services, alice: str, method: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    body = b"" if method == "POST" else None

    api = await client.request(method, f"/order/1/{order_id}", body=body, headers=JSON)
    page = await client.request(method, f"/order/1/{order_id}", body=body)

    assert_error(api, 401, "not_authenticated")
    assert page.status == 302
    assert page.headers["Location"].startswith("/login?next=")
    assert (await listed(client, alice))["items"][0]["status"] == "placed"


# -- the actions in a browser ----------------------------------------------------------------


@pytest.fixture
async def browser(client: Client, alice: str) -> Browser:
    """A browser logged in as alice."""
    logged_in = Browser(client)
    await logged_in.login("alice", PASSWORD)
    return logged_in


async def test_a_browser_shows_the_order_then_cancels_it_with_a_flash(
    client: Client, services: Services, alice: str, browser: Browser
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    page = await browser.get(f"/order/1/{order_id}")
    assert page.status == 200
    assert "商品名称: abacus" in page.text
    assert f'action="/order/1/{order_id}"' in page.text

    flash = await browser.act(f"/order/1/{order_id}", back="/orders")

    assert flash.text == "订单已取消"
    assert (await listed(client, alice))["items"][0]["status"] == "cancelled"
    refused = await browser.post(f"/order/1/{order_id}")
    assert refused.status == 409
    assert f"订单 {order_id} 已经取消了" in refused.text


async def test_a_browser_reviews_through_the_form(
    client: Client, services: Services, alice: str, browser: Browser
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    form = await browser.get(f"/order/3/{order_id}")
    assert "<textarea" in form.text

    flash = await browser.act(f"/order/3/{order_id}", {"review": "<i>good</i>"}, back="/orders")

    assert flash.text == "评价已保存"
    assert (await listed(client, alice))["items"][0]["review"] == "<i>good</i>"
    assert "&lt;i&gt;good&lt;/i&gt;" in (await browser.get("/orders")).text


async def test_the_review_form_shows_the_current_review_and_replaces_it_explicitly(
    client: Client, services: Services, alice: str, browser: Browser
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    await browser.act(f"/order/3/{order_id}", {"review": "first"}, back="/orders")

    form = await browser.get(f"/order/3/{order_id}")
    assert "当前评价" in form.text and "提交后将替换现有评价" in form.text
    assert 'name="replace" value="1"' in form.text
    blind = await browser.post(f"/order/3/{order_id}", {"review": "second"})
    assert blind.status == 409
    assert "已经有评价" in blind.text and "first" in blind.text
    assert (await listed(client, alice))["items"][0]["review"] == "first"

    flash = await browser.act(
        f"/order/3/{order_id}", {"review": "second", "replace": "1"}, back="/orders"
    )
    assert flash.text == "评价已保存"
    assert (await listed(client, alice))["items"][0]["review"] == "second"
    assert "修改评价" in (await browser.get("/orders")).text


async def test_the_orders_page_shows_when_each_order_was_placed(
    client: Client, services: Services, alice: str, browser: Browser
) -> None:
    await place(services, "alice", "abacus")
    [item] = (await listed(client, alice))["items"]
    placed = dt.datetime.fromisoformat(item["created_at"])

    page = await browser.get("/orders")

    assert "下单时间" in page.text
    assert placed.strftime("%Y-%m-%d %H:%M") in page.text


async def test_the_orders_page_counts_the_orders_and_says_when_it_shows_only_the_newest(
    client: Client,
    services: Services,
    alice: str,
    browser: Browser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await place(services, "alice", "abacus")
    assert "共 1 个订单。" in (await browser.get("/orders")).text
    await place(services, "alice", "abacus")
    monkeypatch.setattr("server.handlers.orders.MAX_LISTED", 1)

    page = await browser.get("/orders")

    assert "共 2 个订单，显示最新的 1 个。" in page.text
    english = await in_english(browser).get("/orders")
    assert "2 orders in total; showing the newest 1." in english.text


async def test_the_order_pages_in_english_have_no_chinese_of_their_own(
    client: Client, services: Services, alice: str
) -> None:
    (order_id,) = await place(services, "alice", "abacus")
    browser = in_english(Browser(client))
    await browser.login("alice", PASSWORD)
    await browser.get("/")  # the login's welcome (a flash: another page's words)

    listing = await browser.get("/orders")
    form = await browser.get(f"/order/3/{order_id}")
    refused = await browser.post(f"/order/3/{order_id}", {"review": "  "})
    flash = await browser.act(f"/order/1/{order_id}", back="/orders")
    cancelled = await browser.get("/orders")
    again = await browser.post(f"/order/1/{order_id}")

    assert '<html lang="en-US">' in listing.text
    for text in ("<h1>My orders</h1>", "1 order in total.", "Ordered at", "Placed"):
        assert text in listing.text
    for text in ("Cancel order</a>", "Buy again</a>", "Review</a>"):
        assert text in listing.text
    assert f"<h1>Order {order_id}: Review</h1>" in form.text
    assert "<p>Goods name: abacus</p>" in form.text and "Back to my orders" in form.text
    assert "must be at least 1 character" in refused.text
    assert flash.text == "The order has been cancelled"
    assert "<td>Cancelled</td>" in cancelled.text
    assert again.status == 409 and f"order {order_id} is already cancelled" in again.text
    for page in (listing, form, refused, cancelled, again):
        assert chinese_in(page.text) == [], page.text


async def test_an_empty_review_in_a_browser_re_renders_the_form_with_422(
    client: Client, services: Services, alice: str, browser: Browser
) -> None:
    (order_id,) = await place(services, "alice", "abacus")

    response = await browser.post(f"/order/3/{order_id}", {"review": "  "})

    assert response.status == 422
    assert "<textarea" in response.text and "至少需要 1 个字符" in response.text
    assert (await listed(client, alice))["items"][0]["review"] is None


async def test_a_browser_post_without_the_xsrf_token_is_refused(
    client: Client, services: Services, alice: str, browser: Browser
) -> None:
    (order_id,) = await place(services, "alice", "abacus")

    response = await browser.post(f"/order/1/{order_id}", xsrf=False)

    assert response.status == 403
    assert (await listed(client, alice))["items"][0]["status"] == "placed"


async def test_an_unknown_order_in_a_browser_is_a_404_page(browser: Browser) -> None:
    response = await browser.get("/order/1/2000000000")

    assert response.status == 404
    assert response.headers["Content-Type"].startswith("text/html")


async def test_the_orders_api_is_documented_in_openapi(client: Client) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert paths["/api/orders"]["get"]["security"] == [{"bearer": []}]


# -- /admin/orders: the staff's order lookup (the demo's 订单查询 menu) -----------------------


async def test_the_order_lookup_shows_every_users_orders_to_the_agent(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    await register(client, "alice")
    await register(client, "bob")
    (alices,) = await place(services, "alice", "<b>abacus</b>")
    (bobs,) = await place(services, "bob", "zither")
    agent = Browser(client)
    await agent.login("agent", demo["agent"])

    everyone = await agent.get("/admin/orders")
    only_bob = await agent.get("/admin/orders?user=bob")
    nobody = await agent.get("/admin/orders?user=" + "x" * 500)

    assert everyone.status == 200
    assert f'data-order-id="{alices}"' in everyone.text
    assert f'data-order-id="{bobs}"' in everyone.text
    assert "&lt;b&gt;abacus&lt;/b&gt;" in everyone.text and "<b>abacus</b>" not in everyone.text
    assert f'data-order-id="{bobs}"' in only_bob.text
    assert f'data-order-id="{alices}"' not in only_bob.text
    assert nobody.status == 200
    assert "data-order-id" not in nobody.text


async def test_the_order_lookup_in_english_names_the_user_searched_for(
    client: Client, services: Services, demo: dict[str, str]
) -> None:
    await register(client, "bob")
    await place(services, "bob", "zither")
    agent = Browser(client)
    await agent.login("agent", demo["agent"])

    chinese = await agent.get("/admin/orders?user=bob")
    english = await in_english(agent).get("/admin/orders?user=bob")

    assert "“bob”：共 1 个订单。" in chinese.text
    assert 'placeholder="按用户名查询"' in chinese.text
    assert "“bob”: 1 order in total." in english.text
    assert 'placeholder="Search by user name"' in english.text
    assert "<h1>Order lookup</h1>" in english.text
    assert chinese_in(english.text) == []


async def test_the_order_lookup_is_403_for_a_customer_and_login_for_a_visitor(
    client: Client, demo: dict[str, str]
) -> None:
    customer = Browser(client)
    await customer.login("customer", demo["customer"])

    assert (await customer.get("/admin/orders")).status == 403
    visitor = await client.get("/admin/orders")
    assert visitor.status == 302
    assert visitor.headers["Location"] == "/login?next=%2Fadmin%2Forders"

"""MenuRepository: CRUD, display order, the tree in one query, no cycles, cascading deletes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from repositories.errors import Conflict, NotFound, Unprocessable
from repositories.menus import MAX_DEPTH, MenuNode, MenuRepository, build_tree, link_tree
from repositories.models import Menu, role_menu
from repositories.roles import RoleRepository
from schemas.text import Text
from tests.repositories.conftest import NO_SUCH_ID, recorded_statements

Shape = list[tuple[str, "Shape"]]


def shape(nodes: Sequence[MenuNode]) -> Shape:
    """The titles of a forest, nested like the forest."""
    return [(node.title, shape(node.children)) for node in nodes]


async def add_chain(menus: MenuRepository, *titles: str) -> list[Menu]:
    """A root and a line of descendants: each title under the one before it."""
    chain: list[Menu] = []
    for title in titles:
        chain.append(await menus.add(title=title, parent_id=chain[-1].id if chain else None))
    return chain


async def test_an_added_menu_reads_back_with_every_field(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    menus = MenuRepository(session)
    parent = await menus.add(title="Admin")
    added = await menus.add(
        title="Users",
        url="/admin/users",
        note="accounts",
        parent_id=parent.id,
        sort=3,
        visible=False,
    )
    await session.commit()

    async with sessions() as fresh:
        menu = await MenuRepository(fresh).get(added.id)
    assert (menu.title, menu.url, menu.note, menu.parent_id, menu.sort, menu.visible) == (
        "Users",
        "/admin/users",
        "accounts",
        parent.id,
        3,
        False,
    )
    assert menu.created_at.utcoffset() is not None
    assert menu.created_at.utcoffset().total_seconds() == 0


async def test_a_new_menu_is_a_visible_root_with_sort_zero_by_default(
    session: AsyncSession,
) -> None:
    menu = await MenuRepository(session).add(title="Home")
    assert (menu.sort, menu.visible, menu.parent_id, menu.url) == (0, True, None, None)


async def test_a_menus_audience_is_stored_listed_and_changed(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    everyone = await menus.add(title="Home", url="/")
    login = await menus.add(title="Login", url="/login", audience="visitors")
    await session.commit()
    assert everyone.audience == "all"
    nodes = {node.title: node.audience for node in await menus.list_nodes()}
    assert nodes == {"Home": "all", "Login": "visitors"}
    await menus.update(login.id, {"audience": "members"})
    await session.commit()
    assert [node.audience for node in build_tree(await menus.list()) if node.id == login.id] == [
        "members"
    ]


async def test_menus_are_listed_by_sort_then_id(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    late = await menus.add(title="late", sort=2)
    zeta = await menus.add(title="zeta", sort=1)
    alpha = await menus.add(title="alpha", sort=1)
    first = await menus.add(title="first", sort=0)

    listed = [menu.id for menu in await menus.list()]

    # zeta before alpha: ties are broken by id, not by title.
    assert listed == [first.id, zeta.id, alpha.id, late.id]
    assert await menus.count() == 4


async def test_get_tree_nests_children_under_their_parents_in_display_order(
    session: AsyncSession,
) -> None:
    menus = MenuRepository(session)
    shop = await menus.add(title="Shop", sort=1)
    admin = await menus.add(title="Admin", sort=0)
    orders = await menus.add(title="Orders", parent_id=shop.id, sort=1)
    goods = await menus.add(title="Goods", parent_id=shop.id, sort=0)
    await menus.add(title="Prices", parent_id=goods.id)
    await menus.add(title="Refunds", parent_id=orders.id)
    await menus.add(title="Users", parent_id=admin.id)

    tree = await menus.get_tree()

    assert shape(tree) == [
        ("Admin", [("Users", [])]),
        ("Shop", [("Goods", [("Prices", [])]), ("Orders", [("Refunds", [])])]),
    ]
    assert tree[1].children[0].parent_id == shop.id


async def test_get_tree_of_no_menus_is_empty(session: AsyncSession) -> None:
    assert await MenuRepository(session).get_tree() == []


async def test_get_tree_issues_exactly_one_select(
    engine: AsyncEngine, session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_chain(MenuRepository(session), "Shop", "Goods", "Prices")
    await add_chain(MenuRepository(session), "Admin", "Users")
    await session.commit()

    async with sessions() as fresh:
        await fresh.connection()  # connect (and let the dialect initialise) before counting
        with recorded_statements(engine) as statements:
            tree = await MenuRepository(fresh).get_tree()

    assert shape(tree) == [
        ("Shop", [("Goods", [("Prices", [])])]),
        ("Admin", [("Users", [])]),
    ]
    assert len(statements) == 1, statements
    assert statements[0].lstrip().upper().startswith("SELECT")


@pytest.mark.parametrize("target", [0, 1, 2], ids=["itself", "its-child", "its-grandchild"])
async def test_moving_a_menu_under_itself_or_its_descendant_is_refused(
    session: AsyncSession, target: int
) -> None:
    menus = MenuRepository(session)
    chain = await add_chain(menus, "Shop", "Goods", "Prices")

    with pytest.raises(Conflict) as refused:
        await menus.update(chain[0].id, {"parent_id": chain[target].id})

    assert refused.value.code == "menu_cycle"
    assert (await menus.get(chain[0].id)).parent_id is None
    assert shape(await menus.get_tree()) == [("Shop", [("Goods", [("Prices", [])])])]


async def test_moving_a_middle_menu_under_its_own_child_is_refused(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    chain = await add_chain(menus, "Shop", "Goods", "Prices")

    with pytest.raises(Conflict) as refused:
        await menus.update(chain[1].id, {"parent_id": chain[2].id})

    assert refused.value.code == "menu_cycle"
    assert refused.value.message == Text(
        "menu {id} cannot move under {parent}: it would be its own ancestor",
        id=chain[1].id,
        parent=chain[2].id,
    )


async def test_a_menu_can_move_under_another_branch_and_back_to_the_root(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    menus = MenuRepository(session)
    _shop, goods = await add_chain(menus, "Shop", "Goods")
    admin = await menus.add(title="Admin", sort=1)

    await menus.update(goods.id, {"parent_id": admin.id})
    await session.commit()
    async with sessions() as fresh:
        assert shape(await MenuRepository(fresh).get_tree()) == [
            ("Shop", []),
            ("Admin", [("Goods", [])]),
        ]

    await menus.update(goods.id, {"parent_id": None, "sort": 2})
    await session.commit()
    async with sessions() as fresh:
        assert shape(await MenuRepository(fresh).get_tree()) == [
            ("Shop", []),
            ("Admin", []),
            ("Goods", []),
        ]


async def test_a_menu_can_move_under_a_descendant_of_its_sibling(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    shop, goods = await add_chain(menus, "Shop", "Goods")
    orders = await menus.add(title="Orders", parent_id=shop.id, sort=1)

    await menus.update(orders.id, {"parent_id": goods.id})

    assert shape(await menus.get_tree()) == [("Shop", [("Goods", [("Orders", [])])])]


async def test_the_same_title_twice_under_one_parent_is_refused(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    shop = await menus.add(title="Shop")
    await menus.add(title="Goods", parent_id=shop.id)

    with pytest.raises(Conflict) as refused:
        await menus.add(title="Goods", parent_id=shop.id)

    assert refused.value.code == "menu_title_taken"
    assert refused.value.message == Text(
        "a menu titled '{title}' already exists here", title="Goods"
    )
    assert await menus.count() == 2


async def test_the_same_title_twice_at_the_root_is_refused(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    await menus.add(title="Shop")

    with pytest.raises(Conflict) as refused:
        await menus.add(title="Shop")

    assert refused.value.code == "menu_title_taken"
    assert await menus.count() == 1


async def test_the_same_title_under_different_parents_is_allowed(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    shop = await menus.add(title="Shop")
    admin = await menus.add(title="Admin")

    await menus.add(title="Settings", parent_id=shop.id)
    await menus.add(title="Settings", parent_id=admin.id)
    await menus.add(title="Settings")

    assert [menu.title for menu in await menus.list()].count("Settings") == 3


async def test_renaming_a_menu_to_a_sibling_title_is_refused(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    shop = await menus.add(title="Shop")
    await menus.add(title="Goods", parent_id=shop.id)
    orders = await menus.add(title="Orders", parent_id=shop.id)

    with pytest.raises(Conflict) as refused:
        await menus.update(orders.id, {"title": "Goods"})

    assert refused.value.code == "menu_title_taken"
    assert (await menus.get(orders.id)).title == "Orders"


async def test_moving_a_menu_next_to_a_sibling_of_the_same_title_is_refused(
    session: AsyncSession,
) -> None:
    menus = MenuRepository(session)
    shop = await menus.add(title="Shop")
    admin = await menus.add(title="Admin")
    await menus.add(title="Settings", parent_id=shop.id)
    admin_settings = await menus.add(title="Settings", parent_id=admin.id)

    with pytest.raises(Conflict) as refused:
        await menus.update(admin_settings.id, {"parent_id": shop.id})

    assert refused.value.code == "menu_title_taken"


async def test_updating_a_menu_without_renaming_it_keeps_its_title_and_url(
    session: AsyncSession,
) -> None:
    menus = MenuRepository(session)
    menu = await menus.add(title="Shop", url="/shop")

    updated = await menus.update(menu.id, {"title": "Shop", "url": "/shop", "note": "n"})

    assert (updated.title, updated.url, updated.note) == ("Shop", "/shop", "n")


async def test_a_url_used_twice_is_refused(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    await menus.add(title="Shop", url="/shop")

    with pytest.raises(Conflict) as refused:
        await menus.add(title="Store", url="/shop")

    assert refused.value.code == "menu_url_taken"
    assert refused.value.message == Text("the url '{url}' belongs to another menu", url="/shop")
    assert await menus.count() == 1


async def test_changing_a_url_to_another_menus_url_is_refused(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    await menus.add(title="Shop", url="/shop")
    admin = await menus.add(title="Admin", url="/admin")

    with pytest.raises(Conflict) as refused:
        await menus.update(admin.id, {"url": "/shop"})

    assert refused.value.code == "menu_url_taken"


async def test_many_menus_may_have_no_url(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    await menus.add(title="Shop")
    await menus.add(title="Admin")

    assert [menu.url for menu in await menus.list()] == [None, None]


async def test_deleting_a_menu_with_children_without_cascade_is_refused(
    session: AsyncSession,
) -> None:
    menus = MenuRepository(session)
    shop, _goods = await add_chain(menus, "Shop", "Goods")

    with pytest.raises(Conflict) as refused:
        await menus.delete(shop.id)

    assert refused.value.code == "menu_has_children"
    assert refused.value.message == Text(
        "menu {id} has children; delete them first or pass cascade", id=shop.id
    )
    assert await menus.count() == 2


async def test_deleting_a_leaf_menu_removes_only_it(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    menus = MenuRepository(session)
    shop, goods = await add_chain(menus, "Shop", "Goods")

    assert await menus.delete(goods.id) == [goods.id]
    await session.commit()

    async with sessions() as fresh:
        assert [menu.id for menu in await MenuRepository(fresh).list()] == [shop.id]


async def grants(session: AsyncSession) -> set[tuple[int, int]]:
    """Every (role_id, menu_id) grant in the database."""
    rows = await session.execute(select(role_menu.c.role_id, role_menu.c.menu_id))
    return {(role_id, menu_id) for role_id, menu_id in rows}


async def test_deleting_with_cascade_removes_the_whole_subtree_and_its_grants(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    menus = MenuRepository(session)
    shop, goods, prices = await add_chain(menus, "Shop", "Goods", "Prices")
    orders = await menus.add(title="Orders", parent_id=shop.id)
    refunds = await menus.add(title="Refunds", parent_id=orders.id)
    admin, users = await add_chain(menus, "Admin", "Users")
    role = await RoleRepository(session).add(name="staff")
    await RoleRepository(session).set_menus(
        role.id, [shop.id, goods.id, prices.id, refunds.id, admin.id, users.id]
    )
    await session.commit()

    deleted = await menus.delete(shop.id, cascade=True)
    await session.commit()

    assert sorted(deleted) == sorted([shop.id, goods.id, prices.id, orders.id, refunds.id])
    async with sessions() as fresh:
        assert shape(await MenuRepository(fresh).get_tree()) == [("Admin", [("Users", [])])]
        assert await grants(fresh) == {(role.id, admin.id), (role.id, users.id)}


async def test_ids_granted_to_roles_is_the_union_of_their_grants(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    roles = RoleRepository(session)
    shop, goods, prices = await add_chain(menus, "Shop", "Goods", "Prices")
    admin = await menus.add(title="Admin")
    seller = await roles.add(name="seller")
    buyer = await roles.add(name="buyer")
    auditor = await roles.add(name="auditor")
    await roles.set_menus(seller.id, [shop.id, goods.id])
    await roles.set_menus(buyer.id, [goods.id, prices.id])
    await roles.set_menus(auditor.id, [admin.id])

    assert await menus.ids_granted_to_roles([seller.id, buyer.id]) == {
        shop.id,
        goods.id,
        prices.id,
    }
    assert await menus.ids_granted_to_roles({auditor.id}) == {admin.id}
    assert await menus.ids_granted_to_roles([]) == set()
    assert await menus.ids_granted_to_roles([NO_SUCH_ID]) == set()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda menus: menus.get(NO_SUCH_ID), id="get"),
        pytest.param(lambda menus: menus.update(NO_SUCH_ID, {"title": "x"}), id="update"),
        pytest.param(lambda menus: menus.delete(NO_SUCH_ID), id="delete"),
        pytest.param(lambda menus: menus.delete(NO_SUCH_ID, cascade=True), id="delete-cascade"),
        pytest.param(lambda menus: menus.add(title="x", parent_id=NO_SUCH_ID), id="add-under"),
    ],
)
async def test_an_unknown_menu_is_not_found(session: AsyncSession, call: Any) -> None:
    menus = MenuRepository(session)
    await menus.add(title="Shop")

    with pytest.raises(NotFound) as missing:
        await call(menus)

    assert missing.value.code == "menu_not_found"
    assert await menus.count() == 1


async def test_moving_a_menu_under_an_unknown_parent_is_not_found(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    shop = await menus.add(title="Shop")

    with pytest.raises(NotFound) as missing:
        await menus.update(shop.id, {"parent_id": NO_SUCH_ID})

    assert missing.value.code == "menu_not_found"
    assert missing.value.message == Text("menu {id} does not exist", id=NO_SUCH_ID)
    assert (await menus.get(shop.id)).parent_id is None


async def test_updating_a_field_that_is_not_a_menu_field_is_refused(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    shop = await menus.add(title="Shop")

    with pytest.raises(ValueError, match="created_at"):
        await menus.update(shop.id, {"title": "Store", "created_at": None})

    assert (await menus.get(shop.id)).title == "Shop"


def node(menu_id: int, title: str, parent_id: int | None) -> MenuNode:
    """A bare menu node for build_tree."""
    return MenuNode(
        id=menu_id, title=title, url=None, note=None, parent_id=parent_id, sort=0, visible=True
    )


def test_build_tree_keeps_menus_whose_parent_was_filtered_out_as_roots() -> None:
    # Menu 1 (the parent of 2) is not in the input, e.g. because the user may not see it.
    visible = [node(2, "Goods", 1), node(3, "Prices", 2), node(4, "Admin", None), node(5, "X", 99)]

    tree = build_tree(visible)

    assert shape(tree) == [("Goods", [("Prices", [])]), ("Admin", []), ("X", [])]
    assert tree[0].parent_id == 1


def test_build_tree_keeps_children_in_input_order_wherever_the_parent_appears() -> None:
    tree = build_tree([node(3, "b", 1), node(1, "root", None), node(2, "a", 1)])

    assert shape(tree) == [("root", [("b", []), ("a", [])])]


def test_build_tree_returns_fresh_nodes_and_leaves_its_input_alone() -> None:
    given = [node(1, "root", None), node(2, "child", 1)]

    tree = build_tree(given)

    assert tree[0] is not given[0]
    assert given[0].children == []
    assert shape(tree) == [("root", [("child", [])])]


def depth_of(nodes: Sequence[MenuNode]) -> int:
    """How many levels a forest spans, measured without recursion."""
    depth, level = 0, list(nodes)
    while level:
        depth += 1
        level = [child for node in level for child in node.children]
    return depth


def test_link_tree_leaves_out_nodes_deeper_than_max_depth() -> None:
    chain = [node(1, "1", None)] + [node(i, str(i), i - 1) for i in range(2, MAX_DEPTH + 6)]

    tree = link_tree(chain)

    assert depth_of(tree) == MAX_DEPTH
    [root] = tree
    assert root.id == 1


def test_link_tree_measures_depth_the_same_whatever_the_input_order() -> None:
    deepest_first = [node(i, str(i), i - 1) for i in range(MAX_DEPTH + 3, 1, -1)]

    tree = link_tree([*deepest_first, node(1, "1", None)])

    assert depth_of(tree) == MAX_DEPTH


def test_link_tree_leaves_out_cycles_and_what_hangs_below_them_but_keeps_the_rest() -> None:
    nodes = [
        node(1, "Home", None),
        node(2, "News", 1),
        node(3, "A", 4),  # 3 and 4 are each other's parent: older data only
        node(4, "B", 3),
        node(5, "Under A", 3),
        node(6, "Itself", 6),
    ]

    assert shape(link_tree(nodes)) == [("Home", [("News", [])])]


async def set_parent(session: AsyncSession, menu_id: int, parent_id: int | None) -> None:
    """Write a parent straight into the table, as older versions could (no checks)."""
    await session.execute(update(Menu).where(Menu.id == menu_id).values(parent_id=parent_id))


async def test_get_tree_of_rows_that_loop_is_finite(session: AsyncSession) -> None:
    menus = MenuRepository(session)
    await menus.add(title="Home")
    a, b = await add_chain(menus, "A", "B")
    await set_parent(session, a.id, b.id)
    await session.commit()

    assert shape(await menus.get_tree()) == [("Home", [])]


async def test_deleting_with_cascade_menus_that_loop_terminates_and_removes_them(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    menus = MenuRepository(session)
    home = await menus.add(title="Home")
    a, b, c = await add_chain(menus, "A", "B", "C")
    await set_parent(session, a.id, c.id)  # A -> C -> B -> A
    await session.commit()

    deleted = await menus.delete(a.id, cascade=True)
    await session.commit()

    assert sorted(deleted) == sorted([a.id, b.id, c.id])
    async with sessions() as fresh:
        assert [menu.id for menu in await MenuRepository(fresh).list()] == [home.id]


async def test_a_menu_may_be_created_exactly_max_depth_deep_but_not_deeper(
    session: AsyncSession,
) -> None:
    menus = MenuRepository(session)
    chain = await add_chain(menus, *(f"level {i}" for i in range(1, MAX_DEPTH + 1)))

    with pytest.raises(Unprocessable) as refused:
        await menus.add(title="too deep", parent_id=chain[-1].id)

    assert (refused.value.code, refused.value.status) == ("menu_too_deep", 422)
    assert await menus.count() == MAX_DEPTH
    assert depth_of(await menus.get_tree()) == MAX_DEPTH


async def test_moving_a_subtree_is_refused_when_its_leaves_would_pass_max_depth(
    session: AsyncSession,
) -> None:
    menus = MenuRepository(session)
    chain = await add_chain(menus, *(f"level {i}" for i in range(1, MAX_DEPTH + 1)))
    top, _leaf = await add_chain(menus, "Top", "Leaf")

    with pytest.raises(Unprocessable) as refused:
        await menus.update(top.id, {"parent_id": chain[-2].id})  # Leaf would sit at 33

    assert refused.value.code == "menu_too_deep"
    assert refused.value.message == Text(
        "menus may be nested at most {depth} levels deep", depth=MAX_DEPTH
    )
    assert (await menus.get(top.id)).parent_id is None
    moved = await menus.update(top.id, {"parent_id": chain[-3].id})  # Leaf at exactly 32
    assert moved.parent_id == chain[-3].id
    assert depth_of(await menus.get_tree()) == MAX_DEPTH

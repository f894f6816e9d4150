"""The menu repository: the self-referential menu tree, loaded in one query, kept acyclic and at
most ``MAX_DEPTH`` deep.

Every write holds the admin lock (``repositories/locks.py``) before it checks anything, so two
moves, creates or deletes racing each other are checked one after the other: no cycle, no
duplicate title under one parent, on SQLite and MariaDB alike.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.errors import Conflict, NotFound, Unprocessable
from repositories.locks import hold
from repositories.models import Menu, role_menu
from schemas.text import Text

MENU_FIELDS = ("title", "url", "note", "parent_id", "sort", "visible", "permission", "audience")

AUDIENCES = ("all", "visitors", "members")
"""Who a menu is shown to among those it is granted to: everyone, only visitors who are not
logged in (登录), only logged-in users."""

MAX_DEPTH = 32
"""The deepest a menu may sit (a root is at depth 1); deeper creates and moves are refused with
422, and trees built from older data stop showing menus below it."""


@dataclass(slots=True)
class MenuNode:
    """One menu with its children: a plain value, safe to cache and to render."""

    id: int
    title: str
    url: str | None
    note: str | None
    parent_id: int | None
    sort: int
    visible: bool
    children: list[MenuNode] = field(default_factory=list)
    permission: str | None = None
    """The permission the menu's page needs: it is shown only to holders."""
    audience: str = "all"
    """``all``, ``visitors`` (hidden once logged in) or ``members`` (hidden from visitors)."""
    title_key: str | None = None
    """A built-in menu's title as a message id: pages show it translated (``menu_title``)."""


def build_tree(menus: Iterable[Menu | MenuNode]) -> list[MenuNode]:
    """Copy menus into new nodes and link them into a forest in O(n) (see ``link_tree``)."""
    return link_tree(
        MenuNode(
            id=menu.id,
            title=menu.title,
            url=menu.url,
            note=menu.note,
            parent_id=menu.parent_id,
            sort=menu.sort,
            visible=menu.visible,
            permission=menu.permission,
            audience=menu.audience,
            title_key=menu.title_key,
        )
        for menu in menus
    )


def link_tree(fresh: Iterable[MenuNode]) -> list[MenuNode]:
    """Link childless nodes into a forest in place, in O(n); children keep the input order.

    A node whose parent is absent becomes a root, so a filtered set still renders. Nodes below
    ``MAX_DEPTH`` (only older data can hold them) and nodes on a cycle (never written by this
    repository) are left out, so whatever the rows, the forest is finite and shallow.
    """
    nodes = {node.id: node for node in fresh}
    depths: dict[int, int] = {}
    for start in nodes:
        chain: list[int] = []
        current: int | None = start
        while current is not None and current in nodes and current not in depths:
            if len(chain) > len(nodes):
                break  # a cycle: its members get no depth and are left out
            chain.append(current)
            current = nodes[current].parent_id
        base = depths.get(current, 0) if current is not None else 0
        if len(chain) > len(nodes):
            base = MAX_DEPTH  # everything on or below the cycle
        for offset, node_id in enumerate(reversed(chain), start=1):
            depths[node_id] = base + offset
    roots: list[MenuNode] = []
    for node in nodes.values():
        if depths.get(node.id, MAX_DEPTH + 1) > MAX_DEPTH:
            continue
        parent = nodes.get(node.parent_id) if node.parent_id is not None else None
        if parent is None:
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


class MenuRepository:
    """Menus: CRUD, the tree in one query, and no menu ever its own ancestor."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, menu_id: int) -> Menu:
        """The menu with this id, or NotFound."""
        menu = await self.session.get(Menu, menu_id)
        if menu is None:
            raise NotFound(Text("menu {id} does not exist", id=menu_id), code="menu_not_found")
        return menu

    async def list(self) -> Sequence[Menu]:
        """Every menu, in display order (sort, then id)."""
        result = await self.session.scalars(select(Menu).order_by(Menu.sort, Menu.id))
        return result.all()

    async def count(self) -> int:
        """How many menus exist."""
        return int(await self.session.scalar(select(func.count()).select_from(Menu)) or 0)

    async def get_tree(self) -> builtins.list[MenuNode]:
        """The whole menu forest, built from a single query."""
        return link_tree(await self.list_nodes())

    async def list_nodes(self) -> builtins.list[MenuNode]:
        """Every menu as an unlinked node, in display order: plain column reads, no ORM
        identity map, for the hot tree builds."""
        query = select(
            Menu.id,
            Menu.title,
            Menu.url,
            Menu.note,
            Menu.parent_id,
            Menu.sort,
            Menu.visible,
            Menu.permission,
            Menu.audience,
            Menu.title_key,
        ).order_by(Menu.sort, Menu.id)
        rows = await self.session.execute(query)
        return [
            MenuNode(
                id,
                title,
                url,
                note,
                parent_id,
                sort,
                visible,
                permission=permission,
                audience=audience,
                title_key=title_key,
            )
            for (
                id,
                title,
                url,
                note,
                parent_id,
                sort,
                visible,
                permission,
                audience,
                title_key,
            ) in rows
        ]

    async def add(
        self,
        *,
        title: str,
        url: str | None = None,
        note: str | None = None,
        parent_id: int | None = None,
        sort: int = 0,
        visible: bool = True,
        permission: str | None = None,
        audience: str = "all",
        title_key: str | None = None,
    ) -> Menu:
        """Create a menu under ``parent_id`` (a root when None), at most ``MAX_DEPTH`` deep."""
        await hold(self.session)
        if parent_id is not None:
            await self.get(parent_id)
            parents = await self._parents()
            if _depth(parents, parent_id) + 1 > MAX_DEPTH:
                raise _too_deep()
        await self._check_unique(title=title, url=url, parent_id=parent_id, menu_id=None)
        menu = Menu(
            title=title,
            url=url,
            note=note,
            parent_id=parent_id,
            sort=sort,
            visible=visible,
            permission=permission,
            audience=audience,
            title_key=title_key,
        )
        self.session.add(menu)
        await self.session.flush()
        return menu

    async def update(self, menu_id: int, changes: dict[str, Any]) -> Menu:
        """Apply ``changes`` (a subset of MENU_FIELDS); a move into its own subtree is refused."""
        unknown = set(changes) - set(MENU_FIELDS)
        if unknown:
            raise ValueError(f"not menu fields: {sorted(unknown)}")
        await hold(self.session)
        menu = await self.get(menu_id)
        await self.session.refresh(menu)  # read after the lock: what its last holder committed
        title_before = menu.title
        parent_id = changes.get("parent_id", menu.parent_id)
        if "parent_id" in changes and parent_id is not None and parent_id != menu.parent_id:
            await self.get(parent_id)
            if await self.is_ancestor_or_self(menu_id, of=parent_id):
                raise Conflict(
                    Text(
                        "menu {id} cannot move under {parent}: it would be its own ancestor",
                        id=menu_id,
                        parent=parent_id,
                    ),
                    code="menu_cycle",
                )
            parents = await self._parents()
            if _depth(parents, parent_id) + _height(parents, menu_id) > MAX_DEPTH:
                raise _too_deep()
        await self._check_unique(
            title=changes.get("title", menu.title),
            url=changes.get("url", menu.url),
            parent_id=parent_id,
            menu_id=menu_id,
        )
        for name, value in changes.items():
            setattr(menu, name, value)
        if changes.get("title", menu.title) != title_before:
            menu.title_key = None  # renamed by an admin: shown as typed from now on
        await self.session.flush()
        return menu

    async def _parents(self) -> dict[int, int | None]:
        """Every menu's parent id, in one query."""
        rows = await self.session.execute(select(Menu.id, Menu.parent_id))
        return {menu_id: parent_id for menu_id, parent_id in rows}

    async def is_ancestor_or_self(self, candidate_id: int, *, of: int) -> bool:
        """True when ``candidate_id`` is ``of`` or one of its ancestors (walked in one query)."""
        parents = await self._parents()
        current: int | None = of
        for _ in range(len(parents) + 1):
            if current is None:
                return False
            if current == candidate_id:
                return True
            current = parents.get(current)
        return True  # a cycle already exists in the data: treat as refused

    async def delete(self, menu_id: int, *, cascade: bool = False) -> builtins.list[int]:
        """Delete a menu (and, with ``cascade``, its whole subtree); returns the deleted ids.

        A menu with children is refused unless ``cascade``; grants of deleted menus go with them.
        The walk remembers what it visited, so even rows that loop cannot make it loop.
        """
        await hold(self.session)
        await self.get(menu_id)
        rows = (await self.session.execute(select(Menu.id, Menu.parent_id))).all()
        children: dict[int | None, list[int]] = {}
        for child_id, parent_id in rows:
            children.setdefault(parent_id, []).append(child_id)
        if children.get(menu_id) and not cascade:
            raise Conflict(
                Text("menu {id} has children; delete them first or pass cascade", id=menu_id),
                code="menu_has_children",
            )
        levels: builtins.list[builtins.list[int]] = [[menu_id]]
        visited = {menu_id}
        while True:
            below = [
                child
                for parent in levels[-1]
                for child in children.get(parent, ())
                if child not in visited
            ]
            if not below:
                break
            visited.update(below)
            levels.append(below)
        doomed = [menu for level in levels for menu in level]
        await self.session.execute(delete(role_menu).where(role_menu.c.menu_id.in_(doomed)))
        # Unlink before deleting: InnoDB checks the parent foreign key row by row, and rows
        # that loop (older data) have no deepest level to delete first.
        await self.session.execute(
            update(Menu)
            .where(Menu.id.in_(doomed))
            .values(parent_id=None)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(delete(Menu).where(Menu.id.in_(doomed)))
        await self.session.flush()
        return doomed

    async def ids_granted_to_roles(self, role_ids: Iterable[int]) -> set[int]:
        """The ids of menus granted to any of ``role_ids``."""
        ids = list(role_ids)
        if not ids:
            return set()
        result = await self.session.scalars(
            select(role_menu.c.menu_id).where(role_menu.c.role_id.in_(ids)).distinct()
        )
        return set(result.all())

    async def _check_unique(
        self, *, title: str, url: str | None, parent_id: int | None, menu_id: int | None
    ) -> None:
        same_title = select(Menu.id).where(
            Menu.title == title,
            Menu.parent_id.is_(None) if parent_id is None else Menu.parent_id == parent_id,
        )
        if menu_id is not None:
            same_title = same_title.where(Menu.id != menu_id)
        if await self.session.scalar(same_title.limit(1)) is not None:
            raise Conflict(
                Text("a menu titled '{title}' already exists here", title=title),
                code="menu_title_taken",
            )
        if url is not None:
            same_url = select(Menu.id).where(Menu.url == url)
            if menu_id is not None:
                same_url = same_url.where(Menu.id != menu_id)
            if await self.session.scalar(same_url.limit(1)) is not None:
                raise Conflict(
                    Text("the url '{url}' belongs to another menu", url=url),
                    code="menu_url_taken",
                )


def _depth(parents: dict[int, int | None], menu_id: int) -> int:
    """How deep ``menu_id`` sits (a root is 1), counting at most past ``MAX_DEPTH``."""
    depth = 0
    current: int | None = menu_id
    while current is not None and depth <= MAX_DEPTH:
        depth += 1
        current = parents.get(current)
    return depth


def _height(parents: dict[int, int | None], menu_id: int) -> int:
    """How many levels the subtree of ``menu_id`` spans (1 for a leaf), walked iteratively."""
    children: dict[int | None, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    height, level, seen = 0, [menu_id], {menu_id}
    while level and height <= MAX_DEPTH:
        height += 1
        level = [child for node in level for child in children.get(node, ()) if child not in seen]
        seen.update(level)
    return height


def _too_deep() -> Unprocessable:
    return Unprocessable(
        Text("menus may be nested at most {depth} levels deep", depth=MAX_DEPTH),
        code="menu_too_deep",
    )

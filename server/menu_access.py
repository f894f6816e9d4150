"""Who sees and may do what: per role set, the visible menu tree and the permissions held,
cached and invalidated on every menu, role or grant change."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.menus import MenuNode, MenuRepository, link_tree
from repositories.roles import RoleRepository
from schemas.menu import MenuTreeNode
from server.i18n import DEFAULT_LANGUAGE, LANGUAGES, locale_for
from server.invalidation import Event
from server.permissions import LOGIN, PUBLIC
from server.principal import Principal

ANONYMOUS_ROLE = "anonymous"
"""The menus granted to the role of this name are what visitors who are not logged in see."""


def granted_tree(nodes: Sequence[MenuNode], granted_ids: Iterable[int] | None) -> list[MenuNode]:
    """Link the visible part of ``nodes`` (fresh, unlinked) that ``granted_ids`` reach, in O(n);
    all of them when ``granted_ids`` is None.

    A shown granted menu makes its ancestors visible so the tree stays connected. A hidden menu
    (``visible=False``) still grants access but is not shown, and neither is anything below it,
    nor an ancestor that would only be shown because of it.
    """
    by_id = {node.id: node for node in nodes}
    shown: set[int] = set()
    hidden: set[int] = set()
    for start in by_id if granted_ids is None else granted_ids:
        chain: list[int] = []
        current: int | None = start
        while current is not None and current not in shown:
            node = by_id.get(current)
            if node is None or current in hidden or not node.visible or len(chain) > len(by_id):
                hidden.update(chain)  # below a hidden (or missing, or cyclic) menu
                break
            chain.append(current)
            current = node.parent_id
        else:
            shown.update(chain)
    return link_tree(node for node in nodes if node.id in shown)


TREE_JSON = TypeAdapter(list[MenuTreeNode])


def translated_tree(nodes: Sequence[MenuNode], language: str) -> list[MenuNode]:
    """A copy of the forest ``nodes`` with each built-in menu's title in ``language`` (menus an
    admin typed keep their title). Iterative: the depth is the data's."""
    translate = locale_for(language).translate
    copies: dict[int, MenuNode] = {}

    def copy(node: MenuNode) -> MenuNode:
        title = translate(node.title_key) if node.title_key else node.title
        copies[id(node)] = replace(node, title=title, children=[])
        return copies[id(node)]

    roots = [copy(node) for node in nodes]
    stack = list(nodes)
    while stack:
        node = stack.pop()
        parent = copies[id(node)]
        parent.children.extend(copy(child) for child in node.children)
        stack.extend(node.children)
    return roots


@dataclass(frozen=True, slots=True)
class Access:
    """What one role set may see and do: the visible tree (also as JSON in each language,
    encoded once per cache fill rather than on every request) and the permissions held."""

    tree: list[MenuNode]
    permissions: frozenset[str] | None
    """The permission codes held; None means every one (a superuser)."""
    tree_json: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    """The tree as ``MenuTreeNode`` JSON by language: built-in titles translated."""

    @classmethod
    def of(cls, tree: list[MenuNode], permissions: frozenset[str] | None) -> Access:
        """An Access with its tree encoded as ``MenuTreeNode`` JSON in every language."""
        encoded = {
            language: TREE_JSON.dump_json(
                TREE_JSON.validate_python(translated_tree(tree, language), from_attributes=True)
            )
            for language in LANGUAGES
        }
        return cls(tree=tree, permissions=permissions, tree_json=MappingProxyType(encoded))

    def tree_json_in(self, language: str) -> bytes:
        """The tree's JSON with built-in titles in ``language`` (the default language's for
        one not spoken)."""
        return self.tree_json.get(language) or self.tree_json.get(DEFAULT_LANGUAGE, b"[]")

    def permits(self, need: str) -> bool:
        """True when ``need`` (a permission code, or ``PUBLIC``/``LOGIN``) is met by a caller
        with this access (deny by default: an unknown code is held by superusers only)."""
        if need in (PUBLIC, LOGIN) or self.permissions is None:
            return True
        return need in self.permissions


class MenuAccess:
    """The menus each set of roles may see and the permissions it holds, cached per role set.

    ``invalidate()`` drops every cached entry; it runs after any menu, role or grant change,
    and (with Redis) when another process announces one.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[object, Access] = {}
        self._generation = 0

    def invalidate(self) -> None:
        """Forget every cached entry."""
        self._generation += 1
        self._cache.clear()

    def on_event(self, event: Event) -> None:
        """Apply an invalidation event: menu, role and grant changes drop every entry."""
        if event.kind in ("menus", "roles", "all"):
            self.invalidate()

    async def tree_json_for(
        self, principal: Principal | None, language: str = DEFAULT_LANGUAGE
    ) -> bytes:
        """The tree ``principal`` sees, as JSON (a list of ``MenuTreeNode``), built-in menus'
        titles in ``language``."""
        return (await self.access_for(principal)).tree_json_in(language)

    async def tree_for(self, principal: Principal | None) -> list[MenuNode]:
        """The tree ``principal`` sees: all for a superuser, anonymous grants for None."""
        return (await self.access_for(principal)).tree

    async def permits(self, principal: Principal | None, need: str) -> bool:
        """True when ``principal`` meets ``need`` (visitors meet only ``PUBLIC``)."""
        if principal is None:
            return need == PUBLIC
        return (await self.access_for(principal)).permits(need)

    def cached_tree_for(self, principal: Principal | None) -> list[MenuNode] | None:
        """The tree ``principal`` sees if it is cached, else None; never waits (for the error
        pages, which render synchronously and must render while the database is down)."""
        cached = self._cache.get(_cache_key(principal))
        return None if cached is None else cached.tree

    async def access_for(self, principal: Principal | None) -> Access:
        """The cached Access of ``principal``'s role set, built on a miss."""
        key = _cache_key(principal)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        generation = self._generation
        async with self._sessions() as session:
            access = await build_access(session, principal)
        if generation == self._generation:
            self._cache[key] = access
        return access


def _cache_key(principal: Principal | None) -> object:
    if principal is None:
        return ANONYMOUS_ROLE
    if principal.is_superuser:
        return "superuser"
    return principal.role_ids


def for_audience(nodes: Sequence[MenuNode], *, logged_in: bool) -> list[MenuNode]:
    """The menus meant for this caller: ``visitors`` menus only for visitors, ``members`` menus
    only for logged-in users (superusers included). A menu left out takes its subtree with it
    (``granted_tree`` treats a missing parent like a hidden one)."""
    excluded = "visitors" if logged_in else "members"
    return [node for node in nodes if node.audience != excluded]


async def build_access(session: AsyncSession, principal: Principal | None) -> Access:
    """Read the menus, the principal's menu grants and permissions (three queries) and build its
    Access in O(n). A granted menu that names a permission the roles do not grant is not shown:
    nobody sees a link to a page that would answer 403. Visitors hold no permission."""
    menus = for_audience(
        await MenuRepository(session).list_nodes(), logged_in=principal is not None
    )
    if principal is not None and principal.is_superuser:
        return Access.of(granted_tree(menus, None), None)
    roles = RoleRepository(session)
    if principal is None:
        anonymous = await roles.get_by_name(ANONYMOUS_ROLE)
        role_ids: Iterable[int] = () if anonymous is None else (anonymous.id,)
        permissions: frozenset[str] = frozenset()
    else:
        role_ids = principal.role_ids
        permissions = frozenset(await roles.permissions_granted_to_roles(role_ids))
    granted = await MenuRepository(session).ids_granted_to_roles(role_ids)
    usable = {
        menu.id
        for menu in menus
        if menu.id in granted and (menu.permission is None or menu.permission in permissions)
    }
    return Access.of(granted_tree(menus, usable), permissions)

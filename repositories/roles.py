"""The role repository: roles, the menus they grant and the permissions they grant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.errors import Conflict, NotFound
from repositories.models import Menu, Role, role_menu, role_permission
from schemas.text import Text

ROLE_FIELDS = ("name", "description")


class RoleRepository:
    """Roles: CRUD, their menu grants and their permission grants (codes are checked by the
    caller against ``server.permissions``; this layer stores strings)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, role_id: int) -> Role:
        """The role with this id, or NotFound."""
        role = await self.session.get(Role, role_id)
        if role is None:
            raise NotFound(Text("role {id} does not exist", id=role_id), code="role_not_found")
        return role

    async def get_by_name(self, name: str) -> Role | None:
        """The role with this exact name, or None."""
        return await self.session.scalar(select(Role).where(Role.name == name))

    async def list(self) -> Sequence[Role]:
        """Every role, by name."""
        return (await self.session.scalars(select(Role).order_by(Role.name))).all()

    async def add(
        self, *, name: str, description: str | None = None, description_key: str | None = None
    ) -> Role:
        """Create a role; a taken name is a Conflict."""
        if await self.get_by_name(name) is not None:
            raise Conflict(_name_taken(name), code="role_name_taken")
        role = Role(name=name, description=description, description_key=description_key)
        self.session.add(role)
        await self.session.flush()
        return role

    async def update(self, role_id: int, changes: dict[str, Any]) -> Role:
        """Rename or describe a role."""
        unknown = set(changes) - set(ROLE_FIELDS)
        if unknown:
            raise ValueError(f"not role fields: {sorted(unknown)}")
        role = await self.get(role_id)
        renamed = "name" in changes and changes["name"] != role.name
        if renamed and await self.get_by_name(changes["name"]) is not None:
            raise Conflict(_name_taken(changes["name"]), code="role_name_taken")
        if "description" in changes and changes["description"] != role.description:
            role.description_key = None  # an admin's own words, shown as typed from now on
        for name, value in changes.items():
            setattr(role, name, value)
        await self.session.flush()
        return role

    async def delete(self, role_id: int) -> None:
        """Delete a role; its grants and memberships go with it."""
        role = await self.get(role_id)
        await self.session.delete(role)
        await self.session.flush()

    async def menu_ids(self, role_id: int) -> set[int]:
        """The ids of the menus this role grants."""
        result = await self.session.scalars(
            select(role_menu.c.menu_id).where(role_menu.c.role_id == role_id)
        )
        return set(result.all())

    async def menu_ids_by_role(self, role_ids: Iterable[int]) -> dict[int, set[int]]:
        """The menus each of ``role_ids`` grants, in one query (roles granting none are absent)."""
        ids = set(role_ids)
        if not ids:
            return {}
        rows = await self.session.execute(
            select(role_menu.c.role_id, role_menu.c.menu_id).where(role_menu.c.role_id.in_(ids))
        )
        grants: dict[int, set[int]] = {}
        for role_id, menu_id in rows:
            grants.setdefault(role_id, set()).add(menu_id)
        return grants

    async def set_menus(self, role_id: int, menu_ids: Iterable[int]) -> set[int]:
        """Replace the role's grants with ``menu_ids``; unknown menus are NotFound."""
        await self.get(role_id)
        wanted = set(menu_ids)
        if wanted:
            found = set(
                (await self.session.scalars(select(Menu.id).where(Menu.id.in_(wanted)))).all()
            )
            missing = wanted - found
            if missing:
                raise NotFound(
                    Text(
                        "menus do not exist: {ids}",
                        ids=", ".join(str(menu_id) for menu_id in sorted(missing)),
                    ),
                    code="menu_not_found",
                )
        current = await self.menu_ids(role_id)
        if current - wanted:
            await self.session.execute(
                delete(role_menu).where(
                    role_menu.c.role_id == role_id, role_menu.c.menu_id.in_(current - wanted)
                )
            )
        if wanted - current:
            await self.session.execute(
                insert(role_menu),
                [{"role_id": role_id, "menu_id": menu_id} for menu_id in sorted(wanted - current)],
            )
        await self.session.flush()
        return wanted

    async def permissions(self, role_id: int) -> set[str]:
        """The permission codes this role grants."""
        result = await self.session.scalars(
            select(role_permission.c.permission).where(role_permission.c.role_id == role_id)
        )
        return set(result.all())

    async def permissions_by_role(self, role_ids: Iterable[int]) -> dict[int, set[str]]:
        """The permissions each of ``role_ids`` grants, in one query (roles granting none are
        absent)."""
        ids = set(role_ids)
        if not ids:
            return {}
        rows = await self.session.execute(
            select(role_permission.c.role_id, role_permission.c.permission).where(
                role_permission.c.role_id.in_(ids)
            )
        )
        grants: dict[int, set[str]] = {}
        for role_id, permission in rows:
            grants.setdefault(role_id, set()).add(permission)
        return grants

    async def permissions_granted_to_roles(self, role_ids: Iterable[int]) -> set[str]:
        """Every permission any of ``role_ids`` grants."""
        return set().union(*(await self.permissions_by_role(role_ids)).values())

    async def set_permissions(self, role_id: int, permissions: Iterable[str]) -> set[str]:
        """Replace the role's permissions with ``permissions``."""
        await self.get(role_id)
        wanted = set(permissions)
        current = await self.permissions(role_id)
        if current - wanted:
            await self.session.execute(
                delete(role_permission).where(
                    role_permission.c.role_id == role_id,
                    role_permission.c.permission.in_(current - wanted),
                )
            )
        if wanted - current:
            await self.session.execute(
                insert(role_permission),
                [{"role_id": role_id, "permission": code} for code in sorted(wanted - current)],
            )
        await self.session.flush()
        return wanted


def _name_taken(name: str) -> Text:
    return Text("a role named '{name}' exists", name=name)

"""Test helper: give a user permissions through a role of their own, as an admin would."""

from __future__ import annotations

import hashlib

from sqlalchemy.ext.asyncio import AsyncSession

from repositories.roles import RoleRepository
from repositories.users import UserRepository
from server.invalidation import Event
from server.services import Services


async def grant_in_session(session: AsyncSession, user_id: int, *permissions: str) -> int:
    """Add to ``user_id`` a role granting exactly ``permissions``; returns the role's id.

    The role is named after the permission set, so granting the same set twice reuses it.
    """
    codes = sorted(set(permissions))
    name = "grants-" + hashlib.sha256(",".join(codes).encode()).hexdigest()[:16]
    roles = RoleRepository(session)
    role = await roles.get_by_name(name) or await roles.add(name=name, description=",".join(codes))
    await roles.set_permissions(role.id, codes)
    users = UserRepository(session)
    await users.set_roles(user_id, await users.role_ids(user_id) | {role.id})
    return role.id


async def grant(services: Services, user_name: str, *permissions: str) -> int:
    """Give the user named ``user_name`` ``permissions`` and drop what the caches remember of
    them, so their next request sees the grant; returns the role's id."""
    async with services.sessions() as session, session.begin():
        user = await UserRepository(session).get_by_name(user_name)
        if user is None:
            raise LookupError(f"no user named {user_name!r}")
        role_id = await grant_in_session(session, user.id, *permissions)
    await services.invalidation.publish(Event("user", str(user.id)))
    await services.invalidation.publish(Event("roles"))
    return role_id

"""The user repository: accounts, their roles, and the last-superuser rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.errors import Conflict, NotFound
from repositories.locks import hold
from repositories.models import Role, User, user_role
from schemas.text import Text

PROFILE_FIELDS = (
    "name",
    "mobile",
    "city",
    "last_login_device",
    "is_active",
    "is_superuser",
    "language",
)


class UserRepository:
    """Users: lookups, creation, updates, roles; the last active superuser stays."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: int) -> User:
        """The user with this id, or NotFound."""
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFound(Text("user {id} does not exist", id=user_id), code="user_not_found")
        return user

    async def get_by_name(self, name: str) -> User | None:
        """The user with this exact name, or None."""
        return await self.session.scalar(select(User).where(User.name == name))

    async def list(
        self, *, offset: int = 0, limit: int = 50, name_contains: str | None = None
    ) -> Sequence[User]:
        """A page of users ordered by id, optionally those whose name contains a substring."""
        query = select(User).order_by(User.id).offset(offset).limit(limit)
        if name_contains:
            query = query.where(User.name.contains(name_contains, autoescape=True))
        return (await self.session.scalars(query)).all()

    async def count(self, *, name_contains: str | None = None) -> int:
        """How many users match (all of them without a filter)."""
        query = select(func.count()).select_from(User)
        if name_contains:
            query = query.where(User.name.contains(name_contains, autoescape=True))
        return int(await self.session.scalar(query) or 0)

    async def add(
        self,
        *,
        name: str,
        password_hash: str,
        mobile: str | None = None,
        city: str | None = None,
        is_superuser: bool = False,
    ) -> User:
        """Create an account; a taken name is a Conflict."""
        if await self.get_by_name(name) is not None:
            raise Conflict(Text("the name “{name}” is taken", name=name), code="name_taken")
        user = User(
            name=name,
            password_hash=password_hash,
            mobile=mobile,
            city=city,
            is_superuser=is_superuser,
        )
        self.session.add(user)
        await self.session.flush()
        return user

    async def update(self, user_id: int, changes: dict[str, Any]) -> User:
        """Apply profile or status changes; renaming to a taken name or demoting the last superuser
        is a Conflict."""
        unknown = set(changes) - set(PROFILE_FIELDS)
        if unknown:
            raise ValueError(f"not user fields: {sorted(unknown)}")
        user = await self.get(user_id)
        renamed = "name" in changes and changes["name"] != user.name
        if renamed and await self.get_by_name(changes["name"]) is not None:
            raise Conflict(
                Text("the name “{name}” is taken", name=changes["name"]), code="name_taken"
            )
        if changes.get("is_superuser") is False or changes.get("is_active") is False:
            # Two superusers demoting each other at once: the lock makes the second count see
            # the first one's demotion, so one of them is refused.
            await hold(self.session)
            await self.session.refresh(user)
        removes_superuser = (
            user.is_superuser
            and user.is_active
            and (changes.get("is_superuser") is False or changes.get("is_active") is False)
        )
        if removes_superuser and await self.count_active_superusers() <= 1:
            raise Conflict(
                Text("the last active superuser cannot be removed"), code="last_superuser"
            )
        for name, value in changes.items():
            setattr(user, name, value)
        await self.session.flush()
        return user

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """Store a new password hash."""
        user = await self.get(user_id)
        user.password_hash = password_hash
        await self.session.flush()

    async def count_active_superusers(self) -> int:
        """How many active superusers exist."""
        query = (
            select(func.count())
            .select_from(User)
            .where(User.is_superuser.is_(True), User.is_active.is_(True))
        )
        return int(await self.session.scalar(query) or 0)

    async def role_ids(self, user_id: int) -> set[int]:
        """The ids of the roles this user holds."""
        result = await self.session.scalars(
            select(user_role.c.role_id).where(user_role.c.user_id == user_id)
        )
        return set(result.all())

    async def role_ids_by_user(self, user_ids: Iterable[int]) -> dict[int, set[int]]:
        """The roles each of ``user_ids`` holds, in one query (users holding none are absent)."""
        ids = set(user_ids)
        if not ids:
            return {}
        rows = await self.session.execute(
            select(user_role.c.user_id, user_role.c.role_id).where(user_role.c.user_id.in_(ids))
        )
        held: dict[int, set[int]] = {}
        for user_id, role_id in rows:
            held.setdefault(user_id, set()).add(role_id)
        return held

    async def roles(self, user_id: int) -> Sequence[Role]:
        """The roles this user holds, by name."""
        query = (
            select(Role)
            .join(user_role, user_role.c.role_id == Role.id)
            .where(user_role.c.user_id == user_id)
            .order_by(Role.name)
        )
        return (await self.session.scalars(query)).all()

    async def set_roles(self, user_id: int, role_ids: Iterable[int]) -> set[int]:
        """Replace the user's roles with ``role_ids``; unknown roles are NotFound."""
        await self.get(user_id)
        wanted = set(role_ids)
        if wanted:
            found = set(
                (await self.session.scalars(select(Role.id).where(Role.id.in_(wanted)))).all()
            )
            missing = wanted - found
            if missing:
                raise NotFound(
                    Text("roles do not exist: {ids}", ids=", ".join(map(str, sorted(missing)))),
                    code="role_not_found",
                )
        current = await self.role_ids(user_id)
        if current - wanted:
            await self.session.execute(
                delete(user_role).where(
                    user_role.c.user_id == user_id, user_role.c.role_id.in_(current - wanted)
                )
            )
        if wanted - current:
            await self.session.execute(
                insert(user_role),
                [{"user_id": user_id, "role_id": role_id} for role_id in sorted(wanted - current)],
            )
        await self.session.flush()
        return wanted

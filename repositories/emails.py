"""Users' email addresses: look-up by address, change, and marking one verified.

Addresses arrive normalised (``schemas.recovery.normalise_email``); the unique constraint on
``user.email`` is what finally keeps two accounts from holding one address.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.errors import Conflict
from repositories.models import User
from schemas.text import Text


class EmailTaken(Conflict):
    """Another account holds this address."""

    code = "email_taken"

    def __init__(self) -> None:
        super().__init__(Text("another account uses this email address"))


class UserEmailRepository:
    """The ``email`` and ``email_verified`` columns of users."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_email(self, email: str) -> User | None:
        """The user holding this (normalised) address, or None."""
        return await self.session.scalar(select(User).where(User.email == email))

    async def set_email(self, user: User, email: str | None) -> None:
        """Give ``user`` the address (None removes it), unverified; EmailTaken when another
        account holds it, including one that took it a moment ago (the unique constraint)."""
        if email is not None:
            holder = await self.get_by_email(email)
            if holder is not None and holder.id != user.id:
                raise EmailTaken
        user.email = email
        user.email_verified = False
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            raise EmailTaken from None

    async def mark_verified(self, user_id: int, email: str) -> bool:
        """Mark the user's address verified if it is still ``email``; True when it was."""
        result = await self.session.execute(
            update(User)
            .where(User.id == user_id, User.email == email)
            .values(email_verified=True)
            .execution_options(synchronize_session=False)
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

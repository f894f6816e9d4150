"""The one-time token repository: link tokens for email verification and password reset.

Only the SHA-256 of a token is stored. A token is *consumed* by one conditional ``UPDATE ... WHERE
used_at IS NULL AND expires_at > now``: its row count says whether this caller won, so of two
concurrent uses of one link exactly one succeeds, on SQLite and MariaDB alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.models import OneTimeToken, utcnow

Purpose = Literal["verify_email", "reset_password"]
VERIFY_EMAIL: Purpose = "verify_email"
RESET_PASSWORD: Purpose = "reset_password"  # noqa: S105 - a purpose, not a password


class OneTimeTokenRepository:
    """Link tokens: issue, look up a usable one, consume it once, retire a user's others."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        user_id: int,
        purpose: Purpose,
        token_hash: str,
        expires_at: dt.datetime,
        email: str | None = None,
        now: dt.datetime | None = None,
    ) -> OneTimeToken:
        """Record a newly issued token (the caller mails the plaintext; only its hash is kept)."""
        row = OneTimeToken(
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            email=email,
            created_at=now or utcnow(),
            expires_at=expires_at,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def get_usable(
        self, token_hash: str, purpose: Purpose, *, now: dt.datetime
    ) -> OneTimeToken | None:
        """The unused, unexpired token with this hash and purpose, or None."""
        return await self.session.scalar(
            select(OneTimeToken).where(
                OneTimeToken.token_hash == token_hash,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > now,
            )
        )

    async def consume(self, token_hash: str, purpose: Purpose, *, now: dt.datetime) -> bool:
        """Mark the token used if it is unused and unexpired; True only for the caller that did.

        One conditional UPDATE: a concurrent consumer waits for this row's lock and then finds
        ``used_at`` set, so its row count is 0.
        """
        result = await self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.token_hash == token_hash,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

    async def retire_for_user(self, user_id: int, purpose: Purpose, *, now: dt.datetime) -> int:
        """Mark every unused token of the user for ``purpose`` used (a newer link, a new
        address or a completed reset makes them moot); returns how many."""
        result = await self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.user_id == user_id,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount)

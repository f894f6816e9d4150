"""The token repository: revocable logins stored as SHA-256 hashes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from repositories.errors import NotFound
from repositories.models import AuthToken, utcnow
from schemas.text import Text


class TokenRepository:
    """Auth tokens: issue, look up by hash, touch, list live ones, revoke."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, *, user_id: int, token_hash: str, device: str | None, expires_at: dt.datetime
    ) -> AuthToken:
        """Record a newly issued token (the caller keeps the plaintext; only its hash is stored)."""
        now = utcnow()
        token = AuthToken(
            user_id=user_id,
            token_hash=token_hash,
            device=device,
            created_at=now,
            last_used_at=now,
            expires_at=expires_at,
        )
        self.session.add(token)
        await self.session.flush()
        return token

    async def get_by_hash(self, token_hash: str) -> AuthToken | None:
        """The token with this hash, revoked or not, or None."""
        return await self.session.scalar(
            select(AuthToken).where(AuthToken.token_hash == token_hash)
        )

    async def get_for_user(self, token_id: int, user_id: int) -> AuthToken:
        """The user's token with this id, or NotFound (another user's token is not found either)."""
        token = await self.session.scalar(
            select(AuthToken).where(AuthToken.id == token_id, AuthToken.user_id == user_id)
        )
        if token is None:
            raise NotFound(
                Text("session {id} does not exist", id=token_id), code="session_not_found"
            )
        return token

    async def list_live(
        self, user_id: int, *, now: dt.datetime | None = None
    ) -> Sequence[AuthToken]:
        """The user's tokens that are neither revoked nor past their absolute expiry."""
        moment = now or utcnow()
        query = (
            select(AuthToken)
            .where(
                AuthToken.user_id == user_id,
                AuthToken.revoked_at.is_(None),
                AuthToken.expires_at > moment,
            )
            .order_by(AuthToken.id)
        )
        return (await self.session.scalars(query)).all()

    async def touch(self, token_id: int, when: dt.datetime) -> None:
        """Record that the token was used at ``when``."""
        await self.session.execute(
            update(AuthToken).where(AuthToken.id == token_id).values(last_used_at=when)
        )

    async def revoke(self, token_id: int) -> None:
        """Revoke one token (idempotent)."""
        await self.session.execute(
            update(AuthToken)
            .where(AuthToken.id == token_id, AuthToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    async def revoke_all_for_user(self, user_id: int, *, except_id: int | None = None) -> list[str]:
        """Revoke every live token of the user (but ``except_id``); returns the revoked hashes."""
        query = select(AuthToken.id, AuthToken.token_hash).where(
            AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None)
        )
        if except_id is not None:
            query = query.where(AuthToken.id != except_id)
        rows = (await self.session.execute(query)).all()
        if rows:
            await self.session.execute(
                update(AuthToken)
                .where(AuthToken.id.in_([token_id for token_id, _ in rows]))
                .values(revoked_at=utcnow())
            )
        return [token_hash for _, token_hash in rows]

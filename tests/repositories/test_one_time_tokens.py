"""One-time link tokens: single use decided by one conditional UPDATE, expiry, retirement."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.one_time_tokens import RESET_PASSWORD, VERIFY_EMAIL, OneTimeTokenRepository
from repositories.users import UserRepository

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


async def issue(
    sessions: async_sessionmaker[AsyncSession], token_hash: str = "a" * 64, **extra: object
) -> int:
    async with sessions() as session, session.begin():
        user = await UserRepository(session).add(name="cxk", password_hash="x")
        values = {"purpose": RESET_PASSWORD, "expires_at": NOW + HOUR, "now": NOW, **extra}
        await OneTimeTokenRepository(session).add(
            user_id=user.id,
            token_hash=token_hash,
            **values,  # type: ignore[arg-type]
        )
        return user.id


async def consume(sessions: async_sessionmaker[AsyncSession], when: dt.datetime) -> bool:
    async with sessions() as session, session.begin():
        return await OneTimeTokenRepository(session).consume("a" * 64, RESET_PASSWORD, now=when)


async def test_a_token_can_be_consumed_only_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await issue(sessions)

    assert await consume(sessions, NOW) is True
    assert await consume(sessions, NOW) is False


async def test_of_two_concurrent_consumers_exactly_one_wins(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await issue(sessions)
    both_read = asyncio.Barrier(2)

    async def race() -> bool:
        async with sessions() as session, session.begin():
            tokens = OneTimeTokenRepository(session)
            seen = await tokens.get_usable("a" * 64, RESET_PASSWORD, now=NOW)
            await both_read.wait()  # both have seen a usable token before either updates
            assert seen is not None
            return await tokens.consume("a" * 64, RESET_PASSWORD, now=NOW)

    results = await asyncio.gather(race(), race())

    assert sorted(results) == [False, True]


async def test_an_expired_token_cannot_be_consumed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await issue(sessions)

    assert await consume(sessions, NOW + HOUR) is False
    assert await consume(sessions, NOW + HOUR - dt.timedelta(seconds=1)) is True


async def test_a_token_of_another_purpose_is_not_usable(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await issue(sessions)

    async with sessions() as session, session.begin():
        tokens = OneTimeTokenRepository(session)
        assert await tokens.get_usable("a" * 64, VERIFY_EMAIL, now=NOW) is None
        assert await tokens.consume("a" * 64, VERIFY_EMAIL, now=NOW) is False


async def test_retiring_a_users_tokens_makes_them_unusable(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user_id = await issue(sessions)

    async with sessions() as session, session.begin():
        retired = await OneTimeTokenRepository(session).retire_for_user(
            user_id, RESET_PASSWORD, now=NOW
        )

    assert retired == 1
    assert await consume(sessions, NOW) is False

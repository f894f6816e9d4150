"""TokenRepository: issuing, lookups by hash, live tokens, revocation and last use."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.errors import NotFound
from repositories.models import AuthToken, User
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.text import Text
from tests.repositories.conftest import NO_SUCH_ID

DAY = dt.timedelta(days=1)


def digest(plaintext: str) -> str:
    """The stored form of a bearer token."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def now() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


async def add_user(session: AsyncSession, name: str) -> User:
    """A user to own tokens."""
    return await UserRepository(session).add(name=name, password_hash="h")


async def issue(
    tokens: TokenRepository, user: User, plaintext: str, *, expires_in: dt.timedelta = DAY
) -> AuthToken:
    """A token for ``user`` that expires ``expires_in`` from now."""
    return await tokens.add(
        user_id=user.id, token_hash=digest(plaintext), device="phone", expires_at=now() + expires_in
    )


async def test_an_issued_token_reads_back_by_its_hash(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    alice = await add_user(session, "alice")
    expires_at = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    before = now()
    issued = await TokenRepository(session).add(
        user_id=alice.id, token_hash=digest("secret"), device="laptop", expires_at=expires_at
    )
    await session.commit()

    async with sessions() as fresh:
        token = await TokenRepository(fresh).get_by_hash(digest("secret"))
    assert token is not None
    assert (token.id, token.user_id, token.device, token.revoked_at) == (
        issued.id,
        alice.id,
        "laptop",
        None,
    )
    assert token.expires_at == expires_at
    assert token.created_at == token.last_used_at
    assert before <= token.created_at <= now()


async def test_an_unknown_hash_is_none(session: AsyncSession) -> None:
    tokens = TokenRepository(session)
    await issue(tokens, await add_user(session, "alice"), "secret")

    assert await tokens.get_by_hash(digest("other")) is None


async def test_a_naive_expiry_is_refused(session: AsyncSession) -> None:
    alice = await add_user(session, "alice")

    with pytest.raises(StatementError, match="naive"):
        await TokenRepository(session).add(
            user_id=alice.id,
            token_hash=digest("secret"),
            device=None,
            expires_at=dt.datetime(2031, 1, 1),  # naive on purpose
        )


async def test_list_live_leaves_out_revoked_expired_and_other_users_tokens(
    session: AsyncSession,
) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    first = await issue(tokens, alice, "first")
    revoked = await issue(tokens, alice, "revoked")
    await issue(tokens, alice, "expired", expires_in=-dt.timedelta(seconds=1))
    second = await issue(tokens, alice, "second")
    await issue(tokens, bob, "bobs")
    await tokens.revoke(revoked.id)

    live = await tokens.list_live(alice.id)

    assert [token.id for token in live] == [first.id, second.id]


async def test_list_live_judges_expiry_at_the_moment_given(session: AsyncSession) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    short = await issue(tokens, alice, "short", expires_in=dt.timedelta(hours=1))
    long = await issue(tokens, alice, "long", expires_in=dt.timedelta(hours=3))

    in_two_hours = await tokens.list_live(alice.id, now=now() + dt.timedelta(hours=2))
    in_a_day = await tokens.list_live(alice.id, now=now() + DAY)

    assert [token.id for token in in_two_hours] == [long.id]
    assert in_a_day == []
    assert [token.id for token in await tokens.list_live(alice.id)] == [short.id, long.id]


async def test_list_live_compares_instants_not_wall_clocks(session: AsyncSession) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    token = await issue(tokens, alice, "t", expires_in=dt.timedelta(hours=1))
    # 30 minutes from now, written in UTC+08:00: the wall clock is 8 hours ahead of UTC.
    half_an_hour_later = (now() + dt.timedelta(minutes=30)).astimezone(
        dt.timezone(dt.timedelta(hours=8))
    )

    assert [t.id for t in await tokens.list_live(alice.id, now=half_an_hour_later)] == [token.id]


async def test_get_for_user_finds_only_the_users_own_token(session: AsyncSession) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    alices = await issue(tokens, alice, "alices")

    assert (await tokens.get_for_user(alices.id, alice.id)).token_hash == digest("alices")
    with pytest.raises(NotFound) as foreign:
        await tokens.get_for_user(alices.id, bob.id)
    with pytest.raises(NotFound) as missing:
        await tokens.get_for_user(NO_SUCH_ID, alice.id)

    assert foreign.value.code == missing.value.code == "session_not_found"
    assert missing.value.message == Text("session {id} does not exist", id=NO_SUCH_ID)


async def test_revoking_a_token_twice_keeps_the_first_revocation_time(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    token = await issue(tokens, alice, "t")
    other = await issue(tokens, alice, "other")
    before = now()
    await tokens.revoke(token.id)
    await session.commit()
    async with sessions() as fresh:
        first = (await TokenRepository(fresh).get_for_user(token.id, alice.id)).revoked_at

    await tokens.revoke(token.id)
    await session.commit()

    async with sessions() as fresh:
        repository = TokenRepository(fresh)
        again = (await repository.get_for_user(token.id, alice.id)).revoked_at
        untouched = (await repository.get_for_user(other.id, alice.id)).revoked_at
    assert first is not None
    assert before <= first <= now()
    assert again == first
    assert untouched is None


async def test_revoke_all_for_user_spares_the_exception_and_returns_the_revoked_hashes(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    current = await issue(tokens, alice, "current")
    await issue(tokens, alice, "laptop")
    await issue(tokens, alice, "tablet")
    earlier = await issue(tokens, alice, "earlier")
    bobs = await issue(tokens, bob, "bobs")
    await tokens.revoke(earlier.id)
    await session.commit()
    async with sessions() as fresh:
        repository = TokenRepository(fresh)
        revoked_earlier = (await repository.get_for_user(earlier.id, alice.id)).revoked_at

    revoked = await tokens.revoke_all_for_user(alice.id, except_id=current.id)
    await session.commit()

    assert sorted(revoked) == sorted([digest("laptop"), digest("tablet")])
    async with sessions() as fresh:
        repository = TokenRepository(fresh)
        assert [token.id for token in await repository.list_live(alice.id)] == [current.id]
        assert [token.id for token in await repository.list_live(bob.id)] == [bobs.id]
        assert (await repository.get_for_user(earlier.id, alice.id)).revoked_at == revoked_earlier


async def test_revoke_all_for_user_without_an_exception_revokes_every_token(
    session: AsyncSession,
) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    await issue(tokens, alice, "one")
    await issue(tokens, alice, "two")

    assert sorted(await tokens.revoke_all_for_user(alice.id)) == sorted(
        [digest("one"), digest("two")]
    )
    assert await tokens.list_live(alice.id) == []
    assert await tokens.revoke_all_for_user(alice.id) == []


async def test_touch_records_the_time_of_last_use(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    token = await issue(tokens, alice, "t")
    other = await issue(tokens, alice, "other")
    await session.commit()
    # A later moment, given in another time zone, with microseconds.
    when = (token.last_used_at + dt.timedelta(minutes=5, microseconds=7)).astimezone(
        dt.timezone(dt.timedelta(hours=-5))
    )

    await tokens.touch(token.id, when)
    await session.commit()

    async with sessions() as fresh:
        repository = TokenRepository(fresh)
        touched = await repository.get_for_user(token.id, alice.id)
        untouched = await repository.get_for_user(other.id, alice.id)
    assert touched.last_used_at == when
    assert touched.last_used_at.utcoffset() == dt.timedelta(0)
    assert touched.created_at == token.created_at
    assert untouched.last_used_at == other.last_used_at


async def test_deleting_a_user_deletes_their_tokens(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tokens = TokenRepository(session)
    alice = await add_user(session, "alice")
    bob = await add_user(session, "bob")
    await issue(tokens, alice, "alices")
    await issue(tokens, bob, "bobs")
    await session.commit()

    await session.delete(alice)
    await session.commit()

    async with sessions() as fresh:
        assert await TokenRepository(fresh).get_by_hash(digest("alices")) is None
        assert await TokenRepository(fresh).get_by_hash(digest("bobs")) is not None

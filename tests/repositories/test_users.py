"""UserRepository: lookups, unique names, paging and search, roles, and the last-superuser rule."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.errors import Conflict, NotFound
from repositories.models import User
from repositories.roles import RoleRepository
from repositories.users import UserRepository
from schemas.text import Text
from tests.repositories.conftest import NO_SUCH_ID


async def add_user(users: UserRepository, name: str, *, is_superuser: bool = False) -> User:
    """A user with a placeholder hash."""
    return await users.add(name=name, password_hash=f"hash-of-{name}", is_superuser=is_superuser)


async def test_an_added_user_reads_back_by_id_and_by_name(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    added = await UserRepository(session).add(
        name="alice", password_hash="argon2-hash", mobile="13800000000", city="Hangzhou"
    )
    await session.commit()

    async with sessions() as fresh:
        users = UserRepository(fresh)
        by_id = await users.get(added.id)
        by_name = await users.get_by_name("alice")
    assert by_name is not None
    assert by_name.id == by_id.id == added.id
    assert (by_id.name, by_id.password_hash, by_id.mobile, by_id.city) == (
        "alice",
        "argon2-hash",
        "13800000000",
        "Hangzhou",
    )
    assert (by_id.is_active, by_id.is_superuser, by_id.last_login_device) == (True, False, None)


async def test_get_by_name_of_an_unknown_name_is_none(session: AsyncSession) -> None:
    users = UserRepository(session)
    await add_user(users, "alice")

    assert await users.get_by_name("bob") is None
    assert await users.get_by_name("alic") is None


async def test_getting_an_unknown_user_is_not_found(session: AsyncSession) -> None:
    with pytest.raises(NotFound) as missing:
        await UserRepository(session).get(NO_SUCH_ID)

    assert missing.value.code == "user_not_found"
    assert missing.value.message == Text("user {id} does not exist", id=NO_SUCH_ID)


async def test_a_taken_name_is_refused(session: AsyncSession) -> None:
    users = UserRepository(session)
    await add_user(users, "alice")

    with pytest.raises(Conflict) as refused:
        await add_user(users, "alice")

    assert refused.value.code == "name_taken"
    assert refused.value.message == Text("the name “{name}” is taken", name="alice")
    assert await users.count() == 1


async def test_renaming_to_a_taken_name_is_refused(session: AsyncSession) -> None:
    users = UserRepository(session)
    await add_user(users, "alice")
    bob = await add_user(users, "bob")

    with pytest.raises(Conflict) as refused:
        await users.update(bob.id, {"name": "alice"})

    assert refused.value.code == "name_taken"
    assert (await users.get(bob.id)).name == "bob"


async def test_a_user_can_be_renamed_to_a_free_name_or_keep_their_own(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    users = UserRepository(session)
    alice = await add_user(users, "alice")
    bob = await add_user(users, "bob")

    await users.update(alice.id, {"name": "alicia", "city": "Suzhou"})
    await users.update(bob.id, {"name": "bob", "mobile": "1"})
    await session.commit()

    async with sessions() as fresh:
        names = [(user.name, user.city, user.mobile) for user in await UserRepository(fresh).list()]
    assert names == [("alicia", "Suzhou", None), ("bob", None, "1")]


async def test_users_are_listed_by_id_a_page_at_a_time(session: AsyncSession) -> None:
    users = UserRepository(session)
    added = [await add_user(users, name) for name in ("erin", "dave", "carol", "bob", "alice")]

    page = await users.list(offset=1, limit=2)
    rest = await users.list(offset=3, limit=50)

    assert [user.id for user in page] == [added[1].id, added[2].id]
    assert [user.id for user in rest] == [added[3].id, added[4].id]
    assert await users.list(offset=5) == []
    assert await users.count() == 5


async def test_name_contains_finds_users_by_substring_and_counts_them(
    session: AsyncSession,
) -> None:
    users = UserRepository(session)
    for name in ("ann", "joanna", "bob", "hannah"):
        await add_user(users, name)

    found = await users.list(name_contains="ann")

    assert [user.name for user in found] == ["ann", "joanna", "hannah"]
    assert await users.count(name_contains="ann") == 3
    assert await users.count(name_contains="nobody") == 0
    assert [user.name for user in await users.list(name_contains="ann", offset=1, limit=1)] == [
        "joanna"
    ]


@pytest.mark.parametrize(
    ("needle", "expected"),
    [("%", ["50%off"]), ("_", ["a_b"]), ("0%o", ["50%off"]), ("a_", ["a_b"])],
)
async def test_name_contains_treats_like_wildcards_as_plain_characters(
    session: AsyncSession, needle: str, expected: list[str]
) -> None:
    users = UserRepository(session)
    for name in ("50%off", "500off", "a_b", "axb"):
        await add_user(users, name)

    assert [user.name for user in await users.list(name_contains=needle)] == expected
    assert await users.count(name_contains=needle) == len(expected)


async def test_demoting_the_only_active_superuser_is_refused(session: AsyncSession) -> None:
    users = UserRepository(session)
    root = await add_user(users, "root", is_superuser=True)
    await add_user(users, "alice")

    with pytest.raises(Conflict) as refused:
        await users.update(root.id, {"is_superuser": False})

    assert refused.value.code == "last_superuser"
    assert await users.count_active_superusers() == 1
    assert (await users.get(root.id)).is_superuser is True


async def test_deactivating_the_only_active_superuser_is_refused(session: AsyncSession) -> None:
    users = UserRepository(session)
    root = await add_user(users, "root", is_superuser=True)

    with pytest.raises(Conflict) as refused:
        await users.update(root.id, {"is_active": False, "city": "nowhere"})

    assert refused.value.code == "last_superuser"
    assert ((await users.get(root.id)).is_active, (await users.get(root.id)).city) == (True, None)


async def test_an_inactive_superuser_does_not_count_as_a_spare(session: AsyncSession) -> None:
    users = UserRepository(session)
    root = await add_user(users, "root", is_superuser=True)
    spare = await add_user(users, "spare", is_superuser=True)
    await users.update(spare.id, {"is_active": False})

    with pytest.raises(Conflict) as refused:
        await users.update(root.id, {"is_superuser": False})

    assert refused.value.code == "last_superuser"


async def test_one_of_two_superusers_can_be_demoted_but_not_the_second(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    users = UserRepository(session)
    root = await add_user(users, "root", is_superuser=True)
    admin = await add_user(users, "admin", is_superuser=True)

    await users.update(admin.id, {"is_superuser": False})
    await session.commit()
    with pytest.raises(Conflict) as refused:
        await users.update(root.id, {"is_active": False})

    assert refused.value.code == "last_superuser"
    async with sessions() as fresh:
        assert (await UserRepository(fresh).get(admin.id)).is_superuser is False
        assert await UserRepository(fresh).count_active_superusers() == 1


async def test_ordinary_users_can_be_deactivated_while_one_superuser_remains(
    session: AsyncSession,
) -> None:
    users = UserRepository(session)
    await add_user(users, "root", is_superuser=True)
    alice = await add_user(users, "alice")

    await users.update(alice.id, {"is_active": False, "is_superuser": False})

    assert (await users.get(alice.id)).is_active is False


async def test_set_roles_replaces_the_roles_a_user_holds(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    users = UserRepository(session)
    roles = RoleRepository(session)
    alice = await add_user(users, "alice")
    bob = await add_user(users, "bob")
    seller, buyer, auditor = [await roles.add(name=n) for n in ("seller", "buyer", "auditor")]
    await users.set_roles(bob.id, [auditor.id])

    assert await users.set_roles(alice.id, [seller.id, buyer.id]) == {seller.id, buyer.id}
    assert await users.role_ids(alice.id) == {seller.id, buyer.id}
    await users.set_roles(alice.id, [buyer.id, auditor.id, buyer.id])
    await session.commit()

    async with sessions() as fresh:
        assert await UserRepository(fresh).role_ids(alice.id) == {buyer.id, auditor.id}
        assert await UserRepository(fresh).role_ids(bob.id) == {auditor.id}
    await users.set_roles(alice.id, [])
    assert await users.role_ids(alice.id) == set()
    assert await users.role_ids(bob.id) == {auditor.id}


async def test_set_roles_with_an_unknown_role_changes_nothing(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    users = UserRepository(session)
    alice = await add_user(users, "alice")
    seller = await RoleRepository(session).add(name="seller")
    buyer = await RoleRepository(session).add(name="buyer")
    await users.set_roles(alice.id, [seller.id])
    await session.commit()

    with pytest.raises(NotFound) as missing:
        await users.set_roles(alice.id, [buyer.id, NO_SUCH_ID])
    await session.commit()

    assert missing.value.code == "role_not_found"
    assert missing.value.message == Text("roles do not exist: {ids}", ids=str(NO_SUCH_ID))
    async with sessions() as fresh:
        assert await UserRepository(fresh).role_ids(alice.id) == {seller.id}


async def test_set_roles_of_an_unknown_user_is_not_found(session: AsyncSession) -> None:
    seller = await RoleRepository(session).add(name="seller")

    with pytest.raises(NotFound) as missing:
        await UserRepository(session).set_roles(NO_SUCH_ID, [seller.id])

    assert missing.value.code == "user_not_found"


async def test_roles_are_returned_sorted_by_name(session: AsyncSession) -> None:
    users = UserRepository(session)
    roles = RoleRepository(session)
    alice = await add_user(users, "alice")
    bob = await add_user(users, "bob")
    held = [await roles.add(name=name) for name in ("zeta", "alpha", "mid")]
    other = await roles.add(name="beta")
    await users.set_roles(alice.id, [role.id for role in held])
    await users.set_roles(bob.id, [other.id])

    assert [role.name for role in await users.roles(alice.id)] == ["alpha", "mid", "zeta"]
    assert [role.name for role in await users.roles(bob.id)] == ["beta"]


async def test_updating_an_unknown_user_is_not_found(session: AsyncSession) -> None:
    with pytest.raises(NotFound) as missing:
        await UserRepository(session).update(NO_SUCH_ID, {"city": "x"})

    assert missing.value.code == "user_not_found"


@pytest.mark.parametrize("field", ["password_hash", "id", "created_at", "nickname"])
async def test_updating_a_field_that_is_not_a_profile_field_is_refused(
    session: AsyncSession, field: str
) -> None:
    users = UserRepository(session)
    alice = await add_user(users, "alice")

    with pytest.raises(ValueError, match=field):
        await users.update(alice.id, {"city": "Suzhou", field: "x"})

    assert (await users.get(alice.id)).city is None


async def test_set_password_hash_stores_the_new_hash(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    users = UserRepository(session)
    alice = await add_user(users, "alice")
    bob = await add_user(users, "bob")

    await users.set_password_hash(alice.id, "new-hash")
    await session.commit()

    async with sessions() as fresh:
        assert (await UserRepository(fresh).get(alice.id)).password_hash == "new-hash"
        assert (await UserRepository(fresh).get(bob.id)).password_hash == "hash-of-bob"


async def test_timestamps_come_back_timezone_aware_in_utc(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    before = dt.datetime.now(dt.UTC)
    alice = await add_user(UserRepository(session), "alice")
    await session.commit()
    after = dt.datetime.now(dt.UTC)

    async with sessions() as fresh:
        stored = await UserRepository(fresh).get(alice.id)
    for moment in (stored.created_at, stored.updated_at):
        assert moment.tzinfo is not None
        assert moment.utcoffset() == dt.timedelta(0)
        assert before <= moment <= after


async def test_an_update_moves_updated_at_forward_but_not_created_at(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    users = UserRepository(session)
    alice = await add_user(users, "alice")
    await session.commit()
    created, updated = alice.created_at, alice.updated_at
    await asyncio.sleep(0.01)

    await users.update(alice.id, {"city": "Suzhou"})
    await session.commit()

    async with sessions() as fresh:
        stored = await UserRepository(fresh).get(alice.id)
    assert stored.created_at == created
    assert stored.updated_at > updated


async def test_the_roles_of_many_users_are_read_in_one_call(session: AsyncSession) -> None:
    users = UserRepository(session)
    roles = RoleRepository(session)
    ann = await add_user(users, "ann")
    bob = await add_user(users, "bob")
    cid = await add_user(users, "cid")
    staff = await roles.add(name="staff")
    admin = await roles.add(name="admin")
    await users.set_roles(ann.id, {staff.id, admin.id})
    await users.set_roles(bob.id, {staff.id})
    held = await users.role_ids_by_user([ann.id, bob.id, cid.id])
    assert held == {ann.id: {staff.id, admin.id}, bob.id: {staff.id}}
    assert await users.role_ids_by_user([]) == {}

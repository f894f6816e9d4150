"""PasswordHasher: argon2id round trips, refusal of malformed hashes, rehash detection, and work
kept off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import argon2
import pytest

from server.security.passwords import PasswordHasher

# Cheap parameters keep the suite fast; the behaviour under test does not depend on the cost.
CHEAP = {"time_cost": 1, "memory_kib": 8 * 1024, "parallelism": 1}


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    """A hasher with cheap parameters, its pool shut down afterwards."""
    hasher = PasswordHasher(**CHEAP)
    try:
        yield hasher
    finally:
        hasher.close()


async def test_a_hash_verifies_against_its_password(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, "correct horse battery") is True


async def test_a_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery")
    assert await hasher.verify(stored, "correct horse batterY") is False


async def test_the_same_password_hashes_differently_each_time(hasher: PasswordHasher) -> None:
    assert await hasher.hash("same password") != await hasher.hash("same password")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=8192,t=1,p=1$garbage",
        "$2b$12$" + "x" * 53,
        "$argon2id$v=19$m=8192,t=1,p=1$sälz$häsh",  # not ASCII: argon2 cannot even encode it
    ],
    ids=["empty", "not-a-hash", "bad-salt", "bcrypt", "non-ascii"],
)
async def test_a_malformed_hash_never_verifies_and_raises_nothing(
    hasher: PasswordHasher, stored: str
) -> None:
    assert await hasher.verify(stored, "anything at all") is False


async def test_verify_or_dummy_without_a_stored_hash_is_false(hasher: PasswordHasher) -> None:
    assert await hasher.verify_or_dummy(None, "mservices-dummy-password") is False
    assert await hasher.verify_or_dummy(None, "") is False


async def test_verify_or_dummy_with_a_stored_hash_verifies_it(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery")
    assert await hasher.verify_or_dummy(stored, "correct horse battery") is True
    assert await hasher.verify_or_dummy(stored, "wrong horse battery") is False


async def test_verify_or_dummy_without_a_hash_still_spends_a_verification(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified = record_calls(monkeypatch, "verify")
    await hasher.verify_or_dummy(None, "guess")
    assert len(verified) == 1


async def test_a_hash_made_with_other_parameters_needs_a_rehash(hasher: PasswordHasher) -> None:
    other = PasswordHasher(time_cost=2, memory_kib=8 * 1024, parallelism=1)
    try:
        stored = await other.hash("correct horse battery")
    finally:
        other.close()
    assert hasher.needs_rehash(stored) is True


async def test_a_hash_made_with_its_own_parameters_needs_no_rehash(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash(await hasher.hash("correct horse battery")) is False


def test_a_malformed_hash_needs_a_rehash(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash("not a hash") is True


def record_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[threading.Thread]:
    """Wrap ``argon2.PasswordHasher.<method>`` to note the thread of every call."""
    original = getattr(argon2.PasswordHasher, method)
    threads: list[threading.Thread] = []

    def wrapper(self: argon2.PasswordHasher, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argon2.PasswordHasher, method, wrapper)
    return threads


async def test_hashing_and_verifying_run_on_pool_threads_not_the_loop_thread(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed_in = record_calls(monkeypatch, "hash")
    verified_in = record_calls(monkeypatch, "verify")
    stored = await hasher.hash("correct horse battery")
    await hasher.verify(stored, "correct horse battery")
    await hasher.verify_or_dummy(None, "guess")
    loop_thread = threading.current_thread()
    assert hashed_in
    assert verified_in
    assert all(thread is not loop_thread for thread in hashed_in + verified_in)
    assert all(thread.name.startswith("argon2") for thread in hashed_in + verified_in)


async def test_the_event_loop_keeps_running_while_hashes_are_computed(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each hash first waits until the loop has ticked: only possible when the loop is free.
    # Were hashing done on the loop thread, every wait would time out instead.
    loop_ticked = threading.Event()
    saw_a_tick: list[bool] = []
    original = argon2.PasswordHasher.hash

    def hash_after_a_tick(self: argon2.PasswordHasher, *args: Any, **kwargs: Any) -> str:
        saw_a_tick.append(loop_ticked.wait(timeout=5))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argon2.PasswordHasher, "hash", hash_after_a_tick)
    hashes = asyncio.gather(*(hasher.hash(f"password number {n}") for n in range(4)))
    while not hashes.done():
        await asyncio.sleep(0)
        loop_ticked.set()
    assert len(await hashes) == 4
    assert saw_a_tick == [True, True, True, True]

"""Password hashing with argon2id, always off the event loop in a bounded thread pool."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128

# OWASP's argon2id baseline (m=19 MiB, t=2, p=1): about 0.1 s per hash on this project's
# 2-core machines, so logins stay affordable while offline guessing stays expensive.
DEFAULT_TIME_COST = 2
DEFAULT_MEMORY_KIB = 19 * 1024
DEFAULT_PARALLELISM = 1


class PasswordHasher:
    """Hash and verify passwords in a dedicated pool so CPU work never stalls the event loop.

    ``verify_or_dummy`` spends one verification even when there is no stored hash, so a login
    for an unknown name costs as much as one for a real account.
    """

    def __init__(
        self,
        *,
        max_workers: int = 2,
        time_cost: int = DEFAULT_TIME_COST,
        memory_kib: int = DEFAULT_MEMORY_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> None:
        self._hasher = Argon2Hasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="argon2", initializer=_yield_to_the_loop
        )
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password``."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        """True when ``password`` matches ``stored_hash``; a malformed hash never matches."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify_sync, stored_hash, password)

    async def verify_or_dummy(self, stored_hash: str | None, password: str) -> bool:
        """Verify against ``stored_hash``, or burn one verification and fail when it is None."""
        if stored_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash("mservices-dummy-password")
            await self.verify(self._dummy_hash, password + "\x00")
            return False
        return await self.verify(stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def close(self) -> None:
        """Stop the pool after running work finishes."""
        self._pool.shutdown(wait=True)

    def _verify_sync(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError, ValueError):
            return False  # ValueError: a hash or password that cannot even be encoded


WORKER_NICENESS = 10


def _yield_to_the_loop() -> None:
    """Lower this hashing thread's CPU priority so the event loop wins any contention.

    Linux schedules threads individually, so a nice +10 worker gets about a tenth of the CPU
    weight of the loop thread: logins queue up a little under load instead of every other
    request waiting behind argon2. Where per-thread priority is unavailable this is a no-op.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)

"""argon2id hashing off the event loop, in a small bounded pool.

argon2 releases the GIL, so a ThreadPoolExecutor of two workers hashes in parallel
with the loop. The pool is bounded twice: ``workers`` threads, and at most ``queue``
jobs waiting; beyond that a login gets 429 ``rate_limited`` at once instead of queuing
without end, so a burst of logins cannot starve pushes and reads.
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import RateLimited

T = TypeVar("T")


class Passwords:
    """Hash and verify passwords with argon2id without blocking the loop."""

    def __init__(
        self,
        *,
        workers: int = 2,
        queue: int = 32,
        time_cost: int = 3,
        memory_cost: int = 65_536,
        parallelism: int = 4,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._capacity = workers + queue
        self._pending = 0
        self._dummy: str | None = None

    async def _run(self, fn: object, *args: str) -> object:
        if self._pending >= self._capacity:
            raise RateLimited("too many logins in progress; retry shortly", retry_after_ms=1000)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn, *args)  # type: ignore[arg-type]
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        result = await self._run(self._hasher.hash, password)
        assert isinstance(result, str)
        return result

    def _verify_sync(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str, password: str) -> bool:
        """True when ``password`` matches; any malformed hash is a mismatch."""
        return bool(await self._run(self._verify_sync, stored, password))

    async def verify_unknown(self, password: str) -> None:
        """The same work as a real verification, for an email without an account.

        Answering an unknown email faster than a wrong password would tell which emails
        are registered, so it verifies against a hash made with the same parameters.
        """
        if self._dummy is None:
            await self.warm()
        assert self._dummy is not None
        await self.verify(self._dummy, password)

    async def warm(self) -> None:
        """Make the stand-in hash for unknown emails (at startup, so no login pays it)."""
        self._dummy = await self.hash(secrets.token_urlsafe(16))

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

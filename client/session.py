"""The device's session: sign-in at first open, token refresh, and its durable record.

The refresh token rotates on every use (docs/protocol.md section 6); the new pair is written to
the local store before it is used, so a device killed right after a refresh resumes
with the pair the server issued. If the process dies before that write, the next start
presents the just-spent token again, which the server answers, within its 30 s grace
window, with the very same pair it issued the first time. Only one refresh runs at a
time; callers pass the ``generation`` of the token they found wanting, so a burst of
``auth_expired`` answers refreshes once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from client.errors import ApiError, SignedOut
from client.http import HttpApi
from client.store import LocalStore
from core.wire import AuthResponse

log = logging.getLogger("concord.client")

#: Codes after which a refresh token is worthless: sign in again, or give up.
_DEAD_SESSION = frozenset({"unauthenticated", "refresh_reused"})


def parse_time(value: str) -> float:
    """Epoch seconds of an RFC 3339 UTC timestamp (``...Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Login:
    """How to sign in when the store holds no usable session."""

    email: str | None = None
    password: str | None = None
    device_name: str = "concord-sdk"
    register: bool = False


class Session:
    """Tokens of one device; ``token`` is always the latest access token."""

    def __init__(self, api: HttpApi, store: LocalStore, login: Login) -> None:
        self.api = api
        self.store = store
        self.login_info = login
        self.user_id = ""
        self.device_id = ""
        self.personal_space_id = ""
        self.token = ""
        self.refresh_token = ""
        self.expires_at = 0.0
        self.issued_at = 0.0
        self.generation = 0
        self.refreshes = 0
        self._lock = asyncio.Lock()

    @property
    def lifetime(self) -> float:
        return max(1.0, self.expires_at - self.issued_at)

    def expires_in(self) -> float:
        return self.expires_at - time.time()

    async def start(self, meta: dict[str, str]) -> None:
        """Resume the stored session, or sign in (register) as ``login`` says."""
        if meta.get("refresh_token") and meta.get("base_url") == self.api.base_url:
            self.user_id, self.device_id = meta["user_id"], meta["device_id"]
            self.personal_space_id = meta.get("personal_space_id", "")
            self.token, self.refresh_token = meta["access_token"], meta["refresh_token"]
            self.expires_at = float(meta.get("access_expires_at", "0"))
            self.issued_at = float(meta.get("access_issued_at", "0"))
            return
        await self._sign_in(
            meta.get("device_id") if meta.get("base_url") == self.api.base_url else None
        )

    async def _sign_in(self, device_id: str | None) -> None:
        info = self.login_info
        if not info.email or not info.password:
            raise SignedOut("no stored session and no email/password to sign in with")
        if info.register and not device_id:
            answer = await self.api.register(info.email, info.password, info.device_name)
        else:
            answer = await self.api.login(info.email, info.password, info.device_name, device_id)
        await self._adopt(answer, email=info.email)

    async def _adopt(self, answer: AuthResponse, *, email: str | None = None) -> None:
        now = time.time()
        self.user_id, self.device_id = answer.user_id, answer.device_id
        self.personal_space_id = answer.personal_space_id
        self.token, self.refresh_token = answer.access_token, answer.refresh_token
        self.expires_at = parse_time(answer.access_expires_at)
        self.issued_at = min(now, self.expires_at)
        self.generation += 1
        values = {
            "base_url": self.api.base_url,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "personal_space_id": self.personal_space_id,
            "access_token": self.token,
            "refresh_token": self.refresh_token,
            "access_expires_at": repr(self.expires_at),
            "access_issued_at": repr(self.issued_at),
        }
        if email:
            values["email"] = email
        await self.store.put_meta(values)

    async def refresh(self, seen_generation: int | None = None) -> str:
        """A fresh access token. Retryable failures (no answer, 503) raise ``ApiError``;
        a dead session signs in again with the password, else raises ``SignedOut``."""
        async with self._lock:
            if seen_generation is not None and seen_generation != self.generation:
                return self.token  # someone refreshed meanwhile
            try:
                answer = await self.api.refresh(self.refresh_token)
            except ApiError as exc:
                if exc.retryable or exc.code not in _DEAD_SESSION:
                    raise
                log.warning("refresh refused (%s): signing in again", exc.code)
                try:
                    await self._sign_in(self.device_id)
                except ApiError as again:
                    raise SignedOut(f"session ended ({exc.code}); sign-in failed: {again}") from exc
                return self.token
            await self._adopt(answer)
            self.refreshes += 1
            return self.token

    async def fresh_token(self, margin: float = 1.0) -> str:
        """The access token, refreshed first if it expires within ``margin`` seconds."""
        if self.expires_in() <= margin:
            return await self.refresh(self.generation)
        return self.token

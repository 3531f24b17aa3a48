"""Set-up over the public HTTP API: users, devices (sign-ins), shared spaces.

Everything a workload needs before its clock starts is made through the same routes a
client uses (docs/protocol.md section 6), concurrently but bounded (``CONCURRENCY`` requests
in flight), so set-up of thousands of devices takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

PASSWORD = "correct horse battery staple"
CONCURRENCY = 16
T = TypeVar("T")


@dataclass(frozen=True)
class Device:
    """One signed-in device: what a socket needs."""

    email: str
    user_id: str
    device_id: str
    token: str
    personal_space_id: str


async def bounded(
    items: Iterable[T], work: Callable[[T], Awaitable[Any]], limit: int = CONCURRENCY
) -> list[Any]:
    """``work(item)`` for every item, at most ``limit`` at a time; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def _device(email: str, body: dict[str, Any]) -> Device:
    return Device(
        email=email,
        user_id=body["user_id"],
        device_id=body["device_id"],
        token=body["access_token"],
        personal_space_id=body["personal_space_id"],
    )


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> Any:
    for attempt in range(5):
        r = await http.post(path, json=body, **kw)
        if r.status_code in (429, 503) and attempt < 4:  # a busy hasher: wait, retry
            await asyncio.sleep(0.2 * (attempt + 1))
            continue
        if r.status_code >= 300:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None
    raise AssertionError("unreachable")


class Accounts:
    """An HTTP client of one gateway for set-up."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        )
        self.run = secrets.token_hex(3)

    async def __aenter__(self) -> Accounts:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def register(self, index: int) -> Device:
        email = f"bench-{self.run}-{index}@example.com"
        body = await _post(
            self.http,
            "/v1/auth/register",
            {"email": email, "password": PASSWORD, "device_name": "bench-0"},
        )
        return _device(email, body)

    async def login(self, user: Device, name: str) -> Device:
        body = await _post(
            self.http,
            "/v1/auth/login",
            {"email": user.email, "password": PASSWORD, "device_name": name},
        )
        return Device(
            email=user.email,
            user_id=body["user_id"],
            device_id=body["device_id"],
            token=body["access_token"],
            personal_space_id=user.personal_space_id,
        )

    async def users(self, count: int) -> list[Device]:
        """``count`` new users, each with its first device (from registration)."""
        return await bounded(range(count), self.register)

    async def devices(self, users: Sequence[Device], per_user: int) -> list[list[Device]]:
        """``per_user`` devices of each user: the registration's, then new sign-ins."""
        extra = [(u, i) for u in users for i in range(1, per_user)]
        made = await bounded(extra, lambda pair: self.login(pair[0], f"bench-{pair[1]}"))
        by_user: dict[str, list[Device]] = {u.user_id: [u] for u in users}
        for (user, _), device in zip(extra, made, strict=True):
            by_user[user.user_id].append(device)
        return [by_user[u.user_id] for u in users]

    async def create_space(self, owner: Device, name: str) -> str:
        body = await _post(self.http, "/v1/spaces", {"name": name}, headers=_auth(owner.token))
        space_id: str = body["space_id"]
        return space_id

    async def add_member(self, owner: Device, space_id: str, member: Device) -> None:
        """Invite ``member`` as an editor and accept the code as them."""
        invitation = await _post(
            self.http,
            f"/v1/spaces/{space_id}/members",
            {"email": member.email, "role": "editor"},
            headers=_auth(owner.token),
        )
        await _post(
            self.http,
            "/v1/invitations/accept",
            {"code": invitation["code"]},
            headers=_auth(member.token),
        )

    async def shared_spaces(self, groups: Sequence[Sequence[Device]]) -> list[str]:
        """One space per group of users: the first creates it, the others join it."""
        spaces = await bounded(
            list(enumerate(groups)), lambda pair: self.create_space(pair[1][0], f"s{pair[0]}")
        )
        joins = [(g[0], space, m) for g, space in zip(groups, spaces, strict=True) for m in g[1:]]
        await bounded(joins, lambda j: self.add_member(*j))
        return spaces


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}

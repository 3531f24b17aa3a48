"""``GET /v1/devices`` and ``DELETE /v1/devices/{device_id}``."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from litestar import Router, delete, get
from litestar.di import Provide

from core.errors import NotFound
from core.ids import keyset_cursor
from core.wire import DeviceInfo, DeviceList, format_time
from gateway import accounts
from gateway.auth import PrincipalDep, provide_principal
from gateway.context import Resource
from gateway.openapi import AUTHED, USER_SECURITY, errors
from gateway.params import (
    DEFAULT_PAGE,
    KEYSET_AFTER,
    PageLimit,
    after_query,
    keyset_after,
    page_size,
    path_uuid,
    uuid_path,
)
from gateway.sessions import Sessions


@get(
    "/",
    responses=errors(*AUTHED),
    summary="The caller's devices, revoked ones included",
)
async def list_devices(
    principal: PrincipalDep,
    pool: Resource[asyncpg.Pool],
    limit: PageLimit = DEFAULT_PAGE,
    after: Annotated[str | None, after_query(KEYSET_AFTER)] = None,
) -> DeviceList:
    """Oldest first; ``current`` marks the device of the calling token."""
    size = page_size(limit)
    async with pool.acquire() as conn:
        rows = await accounts.devices_of(conn, principal.user_id, keyset_after(after), size + 1)
    page = rows[:size]
    devices = [
        DeviceInfo(
            device_id=row.device_id,
            name=row.name,
            created_at=format_time(row.created_at),
            last_seen_at=format_time(row.last_seen_at) if row.last_seen_at else None,
            current=row.device_id == principal.device_id,
            revoked=row.revoked,
        )
        for row in page
    ]
    last = page[-1] if len(rows) > size else None
    cursor = None if last is None else keyset_cursor(last.created_at, last.device_id)
    return DeviceList(devices=devices, next=cursor)


@delete(
    "/{device_id:str}",
    status_code=204,
    responses=errors(401, 404, 405, 503),
    summary="Revoke a device of the caller and every session of it",
)
async def revoke_device(
    device_id: Annotated[str, uuid_path("the device")],
    principal: PrincipalDep,
    sessions: Resource[Sessions],
) -> None:
    """204 (also when already revoked); 404 for a device that is not the caller's."""
    target = path_uuid(device_id, "device")
    if not await sessions.revoke_device(principal.user_id, target):
        raise NotFound("no such device")


devices_router = Router(
    path="/v1/devices",
    route_handlers=[list_devices, revoke_device],
    dependencies={"principal": Provide(provide_principal)},
    security=USER_SECURITY,
    tags=["devices"],
)

"""``GET /v1/devices`` and ``DELETE /v1/devices/{device_id}``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar import Router, delete, get
from litestar.di import Provide

from core.errors import BadMessage, NotFound
from core.wire import DeviceInfo, DeviceList
from gateway import accounts
from gateway.auth import PrincipalDep, provide_principal
from gateway.context import GatewayDep
from gateway.openapi import AUTHED, USER_SECURITY, errors
from gateway.params import PageAfter, PageLimit, canonical_uuid, page_size, path_uuid, uuid_path

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _cursor(row: accounts.DeviceRow) -> str:
    return f"{(row.created_at - _EPOCH) // _US}.{row.device_id}"


def _parse_cursor(raw: str | None) -> tuple[datetime, str] | None:
    if not raw:
        return None
    micros, _, device_id = raw.partition(".")
    canonical = canonical_uuid(device_id)
    if not micros.isascii() or not micros.isdigit() or len(micros) > 17 or canonical is None:
        raise BadMessage("after: not a valid cursor")
    return _EPOCH + int(micros) * _US, canonical


@get(
    "/",
    responses=errors(*AUTHED),
    summary="The caller's devices, revoked ones included",
)
async def list_devices(
    principal: PrincipalDep,
    gw: GatewayDep,
    limit: PageLimit = None,
    after: PageAfter = None,
) -> DeviceList:
    """Oldest first; ``current`` marks the device of the calling token."""
    size = page_size(limit)
    async with gw.pool.acquire() as conn:
        rows = await accounts.devices_of(conn, principal.user_id, _parse_cursor(after), size + 1)
    page = rows[:size]
    devices = [
        DeviceInfo(
            device_id=row.device_id,
            name=row.name,
            created_at=_iso(row.created_at),
            last_seen_at=_iso(row.last_seen_at) if row.last_seen_at else None,
            current=row.device_id == principal.device_id,
            revoked=row.revoked,
        )
        for row in page
    ]
    return DeviceList(devices=devices, next=_cursor(page[-1]) if len(rows) > size else None)


@delete(
    "/{device_id:str}",
    status_code=204,
    responses=errors(401, 404, 405, 503),
    summary="Revoke a device of the caller and every session of it",
)
async def revoke_device(
    device_id: Annotated[str, uuid_path("the device")], principal: PrincipalDep, gw: GatewayDep
) -> None:
    """204 (also when already revoked); 404 for a device that is not the caller's."""
    target = path_uuid(device_id, "device")
    if not await gw.sessions.revoke_device(principal.user_id, target):
        raise NotFound("no such device")


devices_router = Router(
    path="/v1/devices",
    route_handlers=[list_devices, revoke_device],
    dependencies={"principal": Provide(provide_principal)},
    security=USER_SECURITY,
    tags=["devices"],
)

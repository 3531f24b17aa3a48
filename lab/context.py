"""What every scenario gets: the server, fresh accounts, SDK devices, a meter, checks."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client import Device, DeviceConfig, FlakyLink, HttpApi
from client.session import parse_time
from core.wire import EntityResponse
from crdt import EntityView
from lab.metrics import Meter
from lab.server import LabServer

PASSWORD = "lab-password-correct-horse"


@dataclass
class Account:
    email: str
    password: str = PASSWORD


@dataclass
class Lab:
    """One lab run: the server and a scratch directory for device stores."""

    server: LabServer
    workdir: Path
    access_ttl: float | None = None
    _api: HttpApi | None = field(default=None, init=False)

    @property
    def api(self) -> HttpApi:
        if self._api is None:
            self._api = HttpApi(self.server.url)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()

    def meter(self) -> Meter:
        return Meter(self.server.url, self.server.admin_token)

    async def account(self, label: str) -> Account:
        """A new user (registered over HTTP, so devices only ever log in)."""
        account = Account(f"lab-{label}-{uuid.uuid4().hex[:10]}@example.com")
        answer = await self.api.register(account.email, account.password, f"{label}-setup")
        ttl = parse_time(answer.access_expires_at) - time.time()
        self.access_ttl = round(ttl) if self.access_ttl is None else self.access_ttl
        return account

    @contextlib.asynccontextmanager
    async def device(
        self,
        account: Account,
        name: str,
        *,
        online: bool = True,
        config: DeviceConfig | None = None,
        faults: FlakyLink | None = None,
    ) -> AsyncIterator[Device]:
        path = self.workdir / f"{name}-{uuid.uuid4().hex[:8]}.db"
        async with Device.open(
            self.server.url,
            path,
            email=account.email,
            password=account.password,
            device_name=name,
            online=online,
            config=config,
            faults=faults,
        ) as device:
            yield device


def describe_view(view: EntityView | None) -> dict[str, Any]:
    """Comparable form of a device's view: deleted flag, values and head op_ids."""
    if view is None:
        return {}
    fields = {
        name: (fv.value, [h.op_id for h in fv.heads] if fv.heads is not None else None)
        for name, fv in view.fields.items()
    }
    return {"deleted": view.deleted, "fields": fields}


def describe_response(response: EntityResponse | None) -> dict[str, Any]:
    """The same form for the server's read of the entity."""
    if response is None:
        return {}
    fields = {
        name: (fs.value, [h.op_id for h in fs.heads] if fs.heads is not None else None)
        for name, fs in response.fields.items()
    }
    return {"deleted": response.deleted, "fields": fields}


async def server_view(device: Device, space_id: str, entity_type: str, entity_id: str) -> Any:
    token = await device.token()
    return describe_response(await device.api.entity(token, space_id, entity_type, entity_id))

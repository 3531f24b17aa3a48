"""The HTTP routes of docs/protocol.md section 6 the SDK and the lab use, over httpx.

Every non-2xx answer becomes an :class:`ApiError` carrying the wire ``code``; a request
that got no answer at all (refused, reset, timed out) becomes ``ApiError`` with status 0
and code ``unavailable``, retryable.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import httpx
import msgspec

from client.errors import ApiError
from core.wire import (
    AuthResponse,
    DeviceInfo,
    DeviceList,
    EntityList,
    EntityResponse,
    Event,
    HistoryResponse,
    InvitationAccepted,
    InvitationCreated,
    InvitationInfo,
    InvitationList,
    MemberRole,
    PullResponse,
    PushResponse,
    ReminderInfo,
    ReminderList,
    SpaceInfo,
    SpaceList,
)

T = TypeVar("T")


class HttpApi:
    """One httpx client against one Concord base URL (``http://host:port``)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._http.request(
                method, path, json=body, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiError(
                0, "unavailable", f"{type(exc).__name__}: {exc}", retryable=True
            ) from exc
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    async def _get(self, path: str, token: str, kind: type[T], **params: Any) -> T:
        response = await self._call("GET", path, token=token, params=params)
        return msgspec.json.decode(response.content, type=kind)

    # ------------------------------------------------------------------ accounts

    async def register(self, email: str, password: str, device_name: str) -> AuthResponse:
        body = {"email": email, "password": password, "device_name": device_name}
        response = await self._call("POST", "/v1/auth/register", body=body)
        return msgspec.json.decode(response.content, type=AuthResponse)

    async def login(
        self, email: str, password: str, device_name: str, device_id: str | None = None
    ) -> AuthResponse:
        body: dict[str, Any] = {"email": email, "password": password, "device_name": device_name}
        if device_id:
            body["device_id"] = device_id
        response = await self._call("POST", "/v1/auth/login", body=body)
        return msgspec.json.decode(response.content, type=AuthResponse)

    async def refresh(self, refresh_token: str) -> AuthResponse:
        body = {"refresh_token": refresh_token}
        response = await self._call("POST", "/v1/auth/refresh", body=body)
        return msgspec.json.decode(response.content, type=AuthResponse)

    async def logout(self, token: str) -> None:
        await self._call("POST", "/v1/auth/logout", token=token)

    # ------------------------------------------------------------------ devices

    async def devices(self, token: str) -> list[DeviceInfo]:
        """The caller's devices, revoked ones included, oldest first (every page)."""
        return await self._pages("/v1/devices", token, DeviceList, "devices")

    async def revoke_device(self, token: str, device_id: str) -> None:
        """Revoke one of the caller's devices and every session of it."""
        await self._call("DELETE", f"/v1/devices/{device_id}", token=token)

    # ------------------------------------------------------------------ spaces

    async def spaces(self, token: str) -> list[SpaceInfo]:
        """The caller's spaces with its role in each (every page)."""
        return await self._pages("/v1/spaces", token, SpaceList, "spaces")

    async def create_space(self, token: str, name: str) -> str:
        response = await self._call("POST", "/v1/spaces", token=token, body={"name": name})
        return str(response.json()["space_id"])

    async def invite(
        self, token: str, space_id: str, email: str, role: str
    ) -> InvitationCreated | MemberRole:
        """Owners: an invitation whose ``code`` the caller hands over (202), or, for the
        email of a member, that member's role set at once (200, :class:`MemberRole`)."""
        body = {"email": email, "role": role}
        path = f"/v1/spaces/{space_id}/members"
        response = await self._call("POST", path, token=token, body=body)
        if response.status_code == 200:
            return msgspec.json.decode(response.content, type=MemberRole)
        return msgspec.json.decode(response.content, type=InvitationCreated)

    async def accept_invitation(self, token: str, code: str) -> InvitationAccepted:
        """Join the invitation's space; ``ApiError`` 404 ``not_found`` for any code that
        cannot be used (unknown, used, cancelled, expired, inviter no longer an owner)."""
        path = "/v1/invitations/accept"
        response = await self._call("POST", path, token=token, body={"code": code})
        return msgspec.json.decode(response.content, type=InvitationAccepted)

    async def invitations(self, token: str, space_id: str) -> list[InvitationInfo]:
        """Owners: every pending invitation of the space, oldest first (no codes)."""
        found: list[InvitationInfo] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500} | ({"after": after} if after else {})
            page = await self._get(
                f"/v1/spaces/{space_id}/invitations", token, InvitationList, **params
            )
            found.extend(page.invitations)
            if not page.next:
                return found
            after = page.next

    async def cancel_invitation(self, token: str, space_id: str, invitation_id: str) -> None:
        """Owners: the invitation's code stops working at once."""
        path = f"/v1/spaces/{space_id}/invitations/{invitation_id}"
        await self._call("DELETE", path, token=token)

    async def remove_member(self, token: str, space_id: str, user_id: str) -> None:
        """Owners remove anyone but the last owner; any member may remove themselves."""
        await self._call("DELETE", f"/v1/spaces/{space_id}/members/{user_id}", token=token)

    # ------------------------------------------------------------------ sync and reads

    async def push(self, token: str, ops: list[Any], batch_id: str | None = None) -> PushResponse:
        body = {"batch_id": batch_id or uuid.uuid4().hex, "ops": ops}
        response = await self._call("POST", "/v1/sync/push", token=token, body=body)
        return msgspec.json.decode(response.content, type=PushResponse)

    async def pull_all(self, token: str, space_id: str, after: int = 0) -> list[Event]:
        """Every event of the space after ``after``, reading pages until the head."""
        events: list[Event] = []
        while True:
            page = await self._get(
                "/v1/sync/pull", token, PullResponse, space_id=space_id, after=after, limit=1000
            )
            events.extend(page.events)
            if not page.events or page.events[-1].seq >= page.head:
                return events
            after = page.events[-1].seq

    async def entity(
        self, token: str, space_id: str, entity_type: str, entity_id: str
    ) -> EntityResponse | None:
        """The server's merged state of one entity, or None when it has none (404)."""
        path = f"/v1/spaces/{space_id}/entities/{entity_type}/{entity_id}"
        try:
            return await self._get(path, token, EntityResponse)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def entities(
        self,
        token: str,
        space_id: str,
        entity_type: str | None = None,
        *,
        include_deleted: bool = False,
    ) -> list[EntityResponse]:
        """The merged states of a space's entities (every page), by type and id."""
        params: dict[str, Any] = {"include_deleted": str(include_deleted).lower()}
        if entity_type is not None:
            params["type"] = entity_type
        path = f"/v1/spaces/{space_id}/entities"
        return await self._pages(path, token, EntityList, "entities", **params)

    async def _pages(
        self, path: str, token: str, kind: type[Any], items: str, **params: Any
    ) -> list[Any]:
        """Every item of a paged list (``next`` is the ``after`` of the next page)."""
        found: list[Any] = []
        after: str | None = None
        while True:
            query = {"limit": 500, **params} | ({"after": after} if after else {})
            page = await self._get(path, token, kind, **query)
            found.extend(getattr(page, items))
            if not page.next:
                return found
            after = page.next

    async def history(
        self, token: str, space_id: str, entity_type: str, entity_id: str
    ) -> list[Event]:
        path = f"/v1/spaces/{space_id}/entities/{entity_type}/{entity_id}/history"
        events: list[Event] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500} | ({"after": after} if after else {})
            page = await self._get(path, token, HistoryResponse, **params)
            events.extend(page.events)
            if not page.next:
                return events
            after = page.next

    async def reminders(self, token: str, space_id: str) -> list[ReminderInfo]:
        found: list[ReminderInfo] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500} | ({"after": after} if after else {})
            page = await self._get(
                f"/v1/spaces/{space_id}/reminders", token, ReminderList, **params
            )
            found.extend(page.reminders)
            if not page.next:
                return found
            after = page.next


def _error_of(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(
            response.status_code,
            str(error["code"]),
            str(error.get("message", "")),
            retryable=bool(error.get("retryable", False)),
        )
    except (ValueError, KeyError, TypeError):
        retryable = response.status_code in (429, 502, 503, 504)
        code = "unavailable" if retryable else "bad_message"
        return ApiError(response.status_code, code, response.text[:200], retryable=retryable)

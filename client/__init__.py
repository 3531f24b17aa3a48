"""Concord's Python device SDK: a durable offline queue, CRDT merge, automatic sync.

See docs/sdk.md. The entry point is :class:`Device` (``async with Device.open(...)``).
May import: ``crdt`` and ``core`` only (a device ships without the server).
"""

from __future__ import annotations

from client.device import Device
from client.errors import ApiError, ClientError, Offline, SignedOut, SyncTimeout
from client.faults import Backoff, FlakyLink
from client.http import HttpApi
from client.state import Acknowledged, DeviceConfig, RejectedOp, SyncStats

__all__ = [
    "Acknowledged",
    "ApiError",
    "Backoff",
    "ClientError",
    "Device",
    "DeviceConfig",
    "FlakyLink",
    "HttpApi",
    "Offline",
    "RejectedOp",
    "SignedOut",
    "SyncStats",
    "SyncTimeout",
]

"""Operations: one intent from one device (docs/protocol.md section 2), as merge rules see it."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["CLIENT_KINDS", "FIELD_KINDS", "LIFECYCLE_KINDS", "SERVER_KINDS", "Op"]


class Op(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An operation or stored event, reduced to what merging and validation need.

    `pred` names the op_ids this op supersedes; `lamport` with `op_id` is the order key.
    `gc=False`: an op holds strings, numbers and a tuple of strings, nothing that can refer
    back to it, so the collector need not track it, nor the head maps that hold ops.
    """

    op_id: str
    entity_type: str
    entity_id: str
    kind: str
    field: str | None = None
    value: Any = None
    pred: tuple[str, ...] = ()
    lamport: int
    device_id: str = ""


FIELD_KINDS: frozenset[str] = frozenset({"set", "inc", "add", "remove"})
"""Client kinds that name a field."""

LIFECYCLE_KINDS: frozenset[str] = frozenset({"delete", "restore"})
"""Client kinds that write the hidden lww field `_deleted` and name no field."""

CLIENT_KINDS: frozenset[str] = FIELD_KINDS | LIFECYCLE_KINDS
"""Every kind a client may send."""

SERVER_KINDS: frozenset[str] = frozenset(
    {"reminder_fired", "reminder_skipped", "member_added", "member_removed", "member_role_changed"}
)
"""Kinds only the server writes; like unknown kinds, they never change merged field state."""

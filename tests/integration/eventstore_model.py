"""A model of the event store, written from docs/protocol.md sections 2 and 4 alone.

It knows, per space, the log (seq -> event) and the members, and predicts what a push
answers: the caller's role first (``not_found`` / ``forbidden`` for every op), then each
op's validity (``invalid_op`` for ids, kinds, lamports and ``pred``; then the schema's
``unknown_entity_type`` / ``unknown_field`` / ``type_mismatch`` / ``too_large``), then
idempotency (``duplicate`` with the original seq, or ``op_id_conflict`` when the payload
differs). It calls nothing of the store's validation: the few schema facts it needs are
written out below, from PROTOCOL's default schema, for the fields the tests push.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_LAMPORT = 2**53 - 1
MAX_PRED = 64
SERVER_DEVICE = "00000000-0000-0000-0000-000000000000"
KINDS = ("set", "inc", "add", "remove", "delete", "restore")
LIFECYCLE = ("delete", "restore")
WRITERS = ("owner", "editor")

#: entity type -> field -> (merge type, JSON type, max length, nullable).
SCHEMA: dict[str, dict[str, tuple[str, str, int | None, bool]]] = {
    "task": {
        "title": ("lww", "string", 500, False),
        "done": ("lww", "boolean", None, False),
        "assignee": ("mv", "string", None, True),
        "tags": ("set", "string", 64, False),
        "pomodoros": ("counter", "integer", None, False),
    },
    "list": {"name": ("lww", "string", 200, False)},
}
#: The kinds each merge type takes.
KINDS_OF = {"lww": ("set",), "mv": ("set",), "set": ("add", "remove"), "counter": ("inc",)}


def canonical(raw_id: Any) -> str | None:
    """An id as the server knows it (lowercase, hyphenated), None if it is no UUID."""
    if not isinstance(raw_id, str):
        return None
    try:
        return str(uuid.UUID(raw_id))
    except ValueError:
        return None


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: ``true``, ``1`` and ``1.0`` are three values."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@dataclass(frozen=True)
class Stored:
    """One event of the model's log. A server event's ``op_id`` is the store's choice (an
    HMAC the model cannot compute): it is learnt from the store when the event is made."""

    seq: int
    op_id: str
    entity_type: str
    entity_id: str
    kind: str
    field: str | None
    value: Any
    pred: tuple[str, ...]
    lamport: int
    user_id: str | None
    device_id: str

    def payload(self) -> str:
        """What PROTOCOL's idempotency compares: the client's fields, defaults filled in."""
        return _payload(
            self.op_id, self.entity_type, self.entity_id, self.kind, self.field, self.value,
            self.pred, self.lamport,
        )  # fmt: skip


def _payload(
    op_id: str,
    entity_type: str,
    entity_id: str,
    kind: str,
    field_name: str | None,
    value: Any,
    pred: tuple[str, ...],
    lamport: int,
) -> str:
    # The space is the same on both sides of a comparison: it is left out.
    fields = [op_id, entity_type, entity_id, kind, field_name, value, list(pred), lamport]
    return json.dumps(fields, sort_keys=True)


@dataclass(frozen=True)
class Expected:
    """One op's predicted result: ``(status, seq, error code)``."""

    status: str
    seq: int | None = None
    code: str | None = None


@dataclass
class SpaceModel:
    space_id: str
    members: dict[str, str] = field(default_factory=dict)
    log: list[Stored] = field(default_factory=list)
    #: Each stored client op as it was first sent (for replays).
    raws: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def head(self) -> int:
        return len(self.log)

    @property
    def max_lamport(self) -> int:
        return max((e.lamport for e in self.log), default=0)

    def event(self, op_id: str) -> Stored | None:
        return next((e for e in self.log if e.op_id == op_id), None)

    def client_ops(self) -> list[Stored]:
        return [e for e in self.log if e.op_id in self.raws]

    def owners(self) -> int:
        return sum(role == "owner" for role in self.members.values())


@dataclass
class Outcome:
    """A push as the model predicts it: results, the events it adds, server_lamport."""

    results: list[Expected]
    added: list[tuple[Stored, dict[str, Any]]]
    server_lamport: int


def predict_push(
    spaces: dict[str, SpaceModel],
    user_id: str,
    device_id: str,
    raws: list[dict[str, Any]],
    headroom: int,
) -> Outcome:
    """What the store must answer to ``raws`` pushed by ``user_id`` from ``device_id``;
    the model is not changed (``commit`` does that)."""
    space_id = canonical(raws[0].get("space_id")) if raws else None
    space = spaces.get(space_id or "")
    role = None if space is None else space.members.get(user_id)
    if space is None or role is None:
        return Outcome([Expected("rejected", code="not_found")] * len(raws), [], 0)
    if role not in WRITERS:
        return Outcome([Expected("rejected", code="forbidden")] * len(raws), [], space.max_lamport)
    cap = space.max_lamport + headroom  # the highest stored *before* the push
    known = {e.op_id: e for e in space.log}
    head, top = space.head, space.max_lamport
    results: list[Expected] = []
    added: list[tuple[Stored, dict[str, Any]]] = []
    for raw in raws:
        code = _invalid(raw, space.space_id, known, cap) or _schema_problem(raw)
        if code is not None:
            results.append(Expected("rejected", code=code))
            continue
        op = _stored(raw, head + 1, user_id, device_id)
        before = known.get(op.op_id)
        if before is not None:
            if before.payload() == op.payload():
                results.append(Expected("duplicate", seq=before.seq))
            else:
                results.append(Expected("rejected", code="op_id_conflict"))
            continue
        head += 1
        top = max(top, op.lamport)
        known[op.op_id] = op
        added.append((op, raw))
        results.append(Expected("applied", seq=op.seq))
    return Outcome(results, added, top)


def commit(space: SpaceModel, outcome: Outcome) -> None:
    """Add a push's new events to the model's log."""
    for event, raw in outcome.added:
        assert event.seq == space.head + 1
        space.log.append(event)
        space.raws[event.op_id] = raw


def _stored(raw: dict[str, Any], seq: int, user_id: str, device_id: str) -> Stored:
    op_id = canonical(raw["op_id"])
    assert op_id is not None
    return Stored(
        seq=seq,
        op_id=op_id,
        entity_type=raw["entity_type"],
        entity_id=raw["entity_id"],
        kind=raw["kind"],
        field=raw.get("field"),
        value=raw.get("value"),
        pred=tuple(str(uuid.UUID(p)) for p in raw.get("pred", [])),
        lamport=raw["lamport"],
        user_id=user_id,
        device_id=device_id,
    )


def _invalid(raw: dict[str, Any], space_id: str, known: dict[str, Stored], cap: int) -> str | None:
    """``invalid_op`` when the op breaks a rule of docs/protocol.md section 2, else None."""
    kind, lamport, pred = raw.get("kind"), raw.get("lamport"), raw.get("pred", [])
    if canonical(raw.get("op_id")) is None or canonical(raw.get("space_id")) != space_id:
        return "invalid_op"
    if kind not in KINDS or (kind not in LIFECYCLE and not isinstance(raw.get("field"), str)):
        return "invalid_op"
    if type(lamport) is not int or not 1 <= lamport <= MAX_LAMPORT or lamport > cap:
        return "invalid_op"
    if not isinstance(pred, list) or len(pred) > MAX_PRED:
        return "invalid_op"
    names = [canonical(p) for p in pred]
    if None in names or len(set(names)) != len(names) or (pred and kind in ("add", "inc")):
        return "invalid_op"
    for name in names:
        target = known.get(name or "")
        if target is None or not _supersedes(raw, target):
            return "invalid_op"
    return None


def _supersedes(raw: dict[str, Any], target: Stored) -> bool:
    """May ``raw`` name ``target`` in its pred? Same entity; for a set, a set of the
    field; for a remove, an add of the element; for delete/restore, one of those; and
    a lower lamport."""
    if (target.entity_type, target.entity_id) != (raw["entity_type"], raw["entity_id"]):
        return False
    kind = raw["kind"]
    if kind == "set":
        fits = target.kind == "set" and target.field == raw["field"]
    elif kind == "remove":
        fits = (
            target.kind == "add"
            and target.field == raw["field"]
            and same_json(target.value, raw.get("value"))
        )
    else:
        fits = target.kind in LIFECYCLE
    return fits and target.lamport < raw["lamport"]


def _schema_problem(raw: dict[str, Any]) -> str | None:
    """The schema's verdict on a valid op (docs/protocol.md section 3, the default schema)."""
    fields = SCHEMA.get(raw["entity_type"])
    if fields is None:
        return "unknown_entity_type"
    kind = raw["kind"]
    if kind in LIFECYCLE:
        return None
    spec = fields.get(raw["field"])
    if spec is None:
        return "unknown_field"
    merge, json_type, longest, nullable = spec
    if kind not in KINDS_OF[merge]:
        return "type_mismatch"
    value = raw.get("value")
    if value is None:
        return None if nullable else "type_mismatch"
    if json_type == "string" and not isinstance(value, str):
        return "type_mismatch"
    if json_type == "boolean" and not isinstance(value, bool):
        return "type_mismatch"
    if json_type == "integer" and (type(value) is not int or abs(value) > 1_000_000):
        return "type_mismatch" if type(value) is not int else "too_large"
    if longest is not None and isinstance(value, str) and len(value) > longest:
        return "too_large"
    return None


def member_change(
    space: SpaceModel, user_id: str, role: str | None, by: str
) -> Stored | str | None:
    """What changing ``user_id``'s role to ``role`` does: the event it writes (its
    ``op_id`` left empty, the store's choice), ``"conflict"`` (the last owner would
    go), or None (nothing changes)."""
    current = space.members.get(user_id)
    if current == role:
        return None
    if current == "owner" and space.owners() == 1:
        return "conflict"
    kind = (
        "member_added"
        if current is None
        else "member_removed"
        if role is None
        else "member_role_changed"
    )
    value = {"user_id": user_id, "role": role, "previous_role": current, "by": by}
    return Stored(
        seq=space.head + 1,
        op_id="",
        entity_type="_member",
        entity_id=user_id,
        kind=kind,
        field=None,
        value=value,
        pred=(),
        lamport=space.max_lamport,
        user_id=None,
        device_id=SERVER_DEVICE,
    )

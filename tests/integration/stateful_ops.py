"""Ops for the store's state machine (test_eventstore_stateful.py), drawn from what the
model knows: valid ops of every kind whose preds name stored ops or earlier ops of the
same push, ops broken in one way each, replays and reuses of stored op_ids.

Every id comes from Hypothesis (``st.uuids``), so a failing example replays exactly.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.integration.eventstore_model import LIFECYCLE, SpaceModel, Stored, canonical

Raw = dict[str, Any]

TASKS = ("t-0", "t-1")
ELEMENTS = ("a", "b", "c")
TITLES = st.sampled_from(["milk", "eggs", "", "b\u00e9b\u00e9", "x" * 500])
VALUES = {
    ("task", "title"): TITLES,
    ("task", "done"): st.booleans(),
    ("task", "assignee"): st.sampled_from(["ann", "bob", None]),
    ("list", "name"): st.sampled_from(["home", "work"]),
}
#: What one drawn op is: a valid op of a kind, an op broken in one way, or an op_id
#: the space (or the push) already holds. Valid kinds weigh more.
SHAPES = (
    *["set"] * 5, "inc", *["add"] * 2, *["remove"] * 2, "delete", "restore",
    "lamport_zero", "at_headroom", "over_headroom", "pred_unknown", "pred_not_lower",
    *["pred_misfit"] * 2, "pred_repeated", "pred_on_add",
    "type_mismatch", "unknown_field", "unknown_entity_type", "too_large",
    "other_space", "bad_op_id",
    *["replay"] * 2, "reuse", "again",
)  # fmt: skip


#: Ops section 2 allows and the schema refuses, one per code.
SCHEMA_BREAKS: dict[str, dict[str, Any]] = {
    "type_mismatch": {"entity_type": "task", "entity_id": "t-0", "field": "done", "value": "yes"},
    "unknown_field": {"entity_type": "task", "entity_id": "t-0", "field": "nope", "value": "x"},
    "unknown_entity_type": {"entity_type": "nope"},
    "too_large": {"entity_type": "task", "entity_id": "t-0", "field": "title", "value": "x" * 501},
}


def new_op_id(data: st.DataObject) -> str:
    return str(data.draw(st.uuids(), label="op_id"))


def _known(space: SpaceModel, earlier: list[Raw]) -> list[Stored]:
    """The space's stored client ops and the push's earlier ops that could be stored.

    Stored ops are listed by op_id, not seq: racing pushes store the same ops whatever
    order they commit in, but not at the same seqs, and what is drawn next must not
    depend on that order (Hypothesis replays an example from its draws alone)."""
    known = sorted(space.client_ops(), key=lambda s: s.op_id)
    for raw in earlier:
        op_id = canonical(raw.get("op_id"))
        if op_id is not None and isinstance(raw.get("lamport"), int):
            known.append(_candidate(op_id, raw))
    return known


def _candidate(op_id: str, raw: Raw) -> Stored:
    """An op of the push being drawn, as a pred candidate for the ops after it."""
    return Stored(
        seq=0,
        op_id=op_id,
        entity_type=raw["entity_type"],
        entity_id=raw["entity_id"],
        kind=raw["kind"],
        field=raw.get("field"),
        value=raw.get("value"),
        pred=(),
        lamport=raw["lamport"],
        user_id=None,
        device_id="",
    )


def _raw(
    data: st.DataObject,
    space: SpaceModel,
    entity: tuple[str, str],
    kind: str,
    field: str | None = None,
    value: Any = None,
    pred: list[Stored] | None = None,
    lamport: int | None = None,
    top: int = 0,
) -> Raw:
    """A wire op; ``lamport`` by default just above its preds (or up to ``top`` + 2)."""
    named = pred or []
    if lamport is None:
        floor = max((p.lamport for p in named), default=0) + 1
        lamport = data.draw(st.integers(floor, max(floor, top) + 2), label="lamport")
    raw: Raw = {
        "op_id": new_op_id(data),
        "space_id": space.space_id,
        "entity_type": entity[0],
        "entity_id": entity[1],
        "kind": kind,
        "lamport": lamport,
    }
    if field is not None:
        raw["field"] = field
    if kind not in LIFECYCLE:
        raw["value"] = value
    if bool(named) or data.draw(st.booleans(), label="pred sent"):
        raw["pred"] = [p.op_id for p in named]
    return raw


def _some(data: st.DataObject, candidates: list[Stored], label: str) -> list[Stored]:
    if not candidates:
        return []
    return data.draw(
        st.lists(st.sampled_from(candidates), max_size=3, unique_by=lambda s: s.op_id),
        label=label,
    )


def _valid(data: st.DataObject, kind: str, space: SpaceModel, known: list[Stored]) -> Raw:
    top = max((k.lamport for k in known), default=space.max_lamport)
    task = ("task", data.draw(st.sampled_from(TASKS), label="task"))
    if kind == "set":
        entity_type, field = data.draw(st.sampled_from(sorted(VALUES)), label="field")
        entity = task if entity_type == "task" else ("list", "l-0")
        value = data.draw(VALUES[(entity_type, field)], label="value")
        same = [k for k in known if (k.entity_type, k.entity_id, k.kind, k.field) == (*entity,
                "set", field)]  # fmt: skip
        return _raw(data, space, entity, "set", field, value, _some(data, same, "heads"), top=top)
    if kind == "inc":
        delta = data.draw(st.integers(-5, 5), label="delta")
        return _raw(data, space, task, "inc", "pomodoros", delta, top=top)
    element = data.draw(st.sampled_from(ELEMENTS), label="element")
    if kind == "add":
        return _raw(data, space, task, "add", "tags", element, top=top)
    if kind == "remove":
        adds = [k for k in known if (k.entity_id, k.kind, k.value) == (task[1], "add", element)]
        pred = _some(data, adds, "adds")
        return _raw(data, space, task, "remove", "tags", element, pred, top=top)
    life = [k for k in known if k.entity_id == task[1] and k.kind in LIFECYCLE]
    return _raw(data, space, task, kind, None, None, _some(data, life, "lifecycle"), top=top)


def _at_headroom(data: st.DataObject, space: SpaceModel, known: list[Stored], headroom: int) -> Raw:
    """A valid set whose lamport is the highest allowed: ``headroom`` above the space's."""
    raw = _valid(data, "set", space, known)
    raw.update(pred=[], lamport=space.max_lamport + headroom)
    return raw


def _broken(
    data: st.DataObject,
    shape: str,
    space: SpaceModel,
    spaces: dict[str, SpaceModel],
    known: list[Stored],
    headroom: int,
) -> Raw:
    """A set (an add for ``pred_on_add``) broken in the one way ``shape`` names."""
    raw = _valid(data, "add" if shape == "pred_on_add" else "set", space, known)
    sets = [k for k in known if k.kind == "set"]
    fitting = [k for k in sets if (k.entity_type, k.entity_id, k.field) == (
        raw["entity_type"], raw["entity_id"], raw.get("field"))]  # fmt: skip
    if shape == "lamport_zero":
        raw["lamport"] = 0
    elif shape == "over_headroom":  # the first lamport refused
        raw["lamport"] = space.max_lamport + headroom + 1
    elif shape == "pred_not_lower" and fitting:
        target = data.draw(st.sampled_from(fitting), label="target")
        raw.update(pred=[target.op_id], lamport=target.lamport)
    elif shape == "pred_misfit":
        raw = _misfit(data, space, known) or {**raw, "pred": [new_op_id(data)]}
    elif shape == "pred_repeated" and fitting:
        target = data.draw(st.sampled_from(fitting), label="target")
        raw.update(pred=[target.op_id, target.op_id], lamport=target.lamport + 1)
    elif shape == "pred_on_add":
        raw["pred"] = [known[0].op_id if known else new_op_id(data)]
    elif shape in SCHEMA_BREAKS:  # valid by section 2 (no pred), the schema refuses it
        raw.update(pred=[], **SCHEMA_BREAKS[shape])
    elif shape == "other_space" and len(spaces) > 1:
        raw["space_id"] = next(s for s in spaces if s != space.space_id)
    elif shape == "bad_op_id":
        raw["op_id"] = "not-a-uuid"
    else:  # the shape needs what the space does not hold yet: a pred naming nothing
        raw["pred"] = [new_op_id(data)]
    return raw


def _misfit(data: st.DataObject, space: SpaceModel, known: list[Stored]) -> Raw | None:
    """A set, remove or delete whose pred names a stored op it may not supersede (another
    field or entity; an add of another element; a set), with a lower lamport."""
    kind = data.draw(st.sampled_from(["set", "remove", "delete"]), label="misfit kind")
    raw = _valid(data, kind, space, known)
    entity: tuple[str, str] = (raw["entity_type"], raw["entity_id"])

    def fits(k: Stored) -> bool:
        if (k.entity_type, k.entity_id) != entity:
            return False
        if kind == "set":
            return k.kind == "set" and k.field == raw["field"]
        if kind == "remove":
            return k.kind == "add" and k.value == raw["value"]
        return k.kind in LIFECYCLE

    def near(k: Stored) -> bool:  # right but for one thing: the likeliest slip
        if kind == "set":
            return k.kind == "set"
        if kind == "remove":
            return k.kind == "add" and k.entity_id == entity[1]
        return k.entity_id == entity[1]

    misfits = [k for k in known if not fits(k)]
    near_misses = [k for k in misfits if near(k)]
    if not misfits:
        return None
    target = data.draw(st.sampled_from(near_misses or misfits), label="misfit")
    raw.update(pred=[target.op_id], lamport=target.lamport + 1)
    return raw


def draw_replay_of(data: st.DataObject, space: SpaceModel) -> Raw | None:
    """A stored op of ``space`` as first sent, now and then with a ``client_time`` (not
    part of the payload) or its op_id in upper case (the same id)."""
    if not space.raws:
        return None
    raw = dict(space.raws[data.draw(st.sampled_from(sorted(space.raws)), label="stored")])
    variant = data.draw(st.sampled_from(["as sent", "client_time", "upper"]), label="variant")
    if variant == "client_time":
        raw["client_time"] = "2026-11-23T10:00:00Z"
    elif variant == "upper":
        raw["op_id"] = raw["op_id"].upper()
    return raw


def reused(raw: Raw) -> Raw:
    """The op_id of ``raw`` on another, still valid, payload."""
    kind, value = raw["kind"], raw.get("value")
    if kind in LIFECYCLE:
        return {**raw, "kind": "restore" if kind == "delete" else "delete"}
    if kind == "remove":  # another element would break its pred: another lamport
        return {**raw, "lamport": raw["lamport"] + 1}
    if isinstance(value, bool):
        changed: Any = not value
    elif isinstance(value, int):
        changed = value + 1
    elif value is None:
        changed = "zed"
    else:
        changed = value[:-1] if len(value) == 500 else value + "!"
    return {**raw, "value": changed}


def draw_ops(
    data: st.DataObject,
    space: SpaceModel,
    spaces: dict[str, SpaceModel],
    headroom: int,
    most: int = 4,
    racing: bool = False,
) -> list[Raw]:
    """One push's ops for ``space``. ``racing``: for a push that races others, none
    above the headroom (another push committed first may raise it, and what is stored
    then depends on the order)."""
    shapes = [s for s in SHAPES if not (racing and s == "over_headroom")]
    raws: list[Raw] = []
    for _ in range(data.draw(st.integers(1, most), label="ops")):
        shape = data.draw(st.sampled_from(shapes), label="shape")
        known = _known(space, raws)
        raw: Raw | None = None
        if shape == "replay":
            raw = draw_replay_of(data, space)
        elif shape == "reuse":
            stored = draw_replay_of(data, space)
            raw = None if stored is None else reused(stored)
        elif shape == "again" and raws:
            raw = dict(data.draw(st.sampled_from(raws), label="again"))
        elif shape in ("set", "inc", "add", "remove", "delete", "restore"):
            raw = _valid(data, shape, space, known)
        elif shape == "at_headroom":
            raw = _at_headroom(data, space, known, headroom)
        elif shape not in ("replay", "reuse", "again", "at_headroom"):
            raw = _broken(data, shape, space, spaces, known, headroom)
        raws.append(raw if raw is not None else _valid(data, "set", space, known))
    return raws

"""The fast canonical JSON path is byte-for-byte RFC 8785, and so is the payload encoding."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from core.canonical import CanonicalError, canonical_json
from eventstore.chain import chain_hash, payload_bytes, payload_digest
from eventstore.writer import server_op_id

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(JSON)
def test_canonical_json_is_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value", [1.0, -0.0, 1e21, 1e-7, {"\ue000": 1, "\U0001f600": 2}, [2**53 - 1, 0.5]]
)
def test_tricky_values(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**60, "\ud800", {1: 2}, object()])
def test_values_without_canonical_form(value: Any) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(value)


@settings(max_examples=100)
@given(
    value=JSON,
    pred=st.lists(st.uuids().map(str), max_size=3),
    field=st.none() | st.text(max_size=8),
    lamport=st.integers(1, 2**53 - 1),
)
def test_payload_bytes_is_rfc8785_of_the_payload(
    value: Any, pred: list[str], field: str | None, lamport: int
) -> None:
    payload = {
        "op_id": str(uuid.uuid4()),
        "space_id": str(uuid.uuid4()),
        "entity_type": "task",
        "entity_id": "t-1",
        "kind": "set",
        "field": field,
        "value": value,
        "pred": pred,
        "lamport": lamport,
    }
    encoded = payload_bytes(
        payload["op_id"],
        payload["space_id"],
        "task",
        "t-1",
        "set",
        field,
        canonical_json(value),
        pred,
        lamport,
    )
    assert encoded == rfc8785.dumps(payload)


def test_the_payload_digest_is_the_sha256_of_every_part() -> None:
    """What idempotency compares and the chain covers: a stored op whose entity, kind,
    field, value, pred, lamport, op_id or space differs has another digest."""
    base: dict[str, Any] = {
        "op_id": "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01",
        "space_id": "0d8c5a56-3b5e-4a47-a4a4-7f3f3e0a9c11",
        "entity_type": "task",
        "entity_id": "t-1",
        "kind": "set",
        "field": "title",
        "value_json": b'"x"',
        "pred": ["9e1b5f4a-2c3d-4e5f-8a9b-0c1d2e3f4a5b"],
        "lamport": 3,
    }
    reference = payload_digest(**base)
    assert reference == hashlib.sha256(payload_bytes(**base)).digest()
    for key, other in [
        ("op_id", "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c02"),
        ("space_id", "0d8c5a56-3b5e-4a47-a4a4-7f3f3e0a9c12"),
        ("entity_type", "list"),
        ("entity_id", "t-2"),
        ("kind", "add"),
        ("field", "notes"),
        ("value_json", b'"y"'),
        ("pred", []),
        ("lamport", 4),
    ]:
        assert payload_digest(**{**base, key: other}) != reference, key


def test_chain_hash_depends_on_every_part() -> None:
    base: dict[str, Any] = {
        "seq": 3,
        "device_id": "d",
        "user_id": "u",
        "client_time": None,
        "recorded_at": "2026-01-01T00:00:00.000000Z",
        "schema_version": 1,
    }
    digest = hashlib.sha256(b"payload").digest()
    reference = chain_hash(bytes(32), digest, *base.values())
    assert chain_hash(bytes(32), digest, *base.values()) == reference
    assert chain_hash(b"\x01" * 32, digest, *base.values()) != reference
    assert chain_hash(bytes(32), bytes(32), *base.values()) != reference
    for key, other in [
        ("seq", 4),
        ("device_id", "e"),
        ("user_id", None),
        ("client_time", "x"),
        ("recorded_at", "2026-01-01T00:00:00.000001Z"),
        ("schema_version", 2),
    ]:
        assert chain_hash(bytes(32), digest, *{**base, key: other}.values()) != reference


def test_server_op_ids_are_keyed_canonical_uuids() -> None:
    a = server_op_id("secret", "member:x:1")
    assert a == server_op_id("secret", "member:x:1")
    assert a != server_op_id("other secret", "member:x:1")
    assert a != server_op_id("secret", "member:x:2")
    parsed = uuid.UUID(a)
    assert str(parsed) == a
    assert parsed.version == 8
    assert parsed.variant == uuid.RFC_4122


def test_integers_are_exact_only_within_the_doubles_safe_range() -> None:
    """RFC 8785 numbers are IEEE doubles: ±(2^53 - 1) are the largest integers it writes
    exactly; from ±2^53 on there is no canonical form (refused, never rounded)."""
    assert canonical_json(2**53 - 1) == b"9007199254740991"
    assert canonical_json(-(2**53 - 1)) == b"-9007199254740991"
    assert canonical_json([{"n": 2**53 - 1}]) == b'[{"n":9007199254740991}]'
    for value in (2**53, -(2**53), [2**53], {"n": -(2**53)}):
        with pytest.raises(CanonicalError, match=r"^value has no canonical JSON form: "):
            canonical_json(value)

"""Payload and chain hashes: idempotency comparison and tamper evidence.

* ``payload_hash`` is SHA-256 of the RFC 8785 canonical JSON of what the client sent
  (docs/protocol.md section 2, Idempotency): ``op_id, space_id, entity_type, entity_id, kind,
  field, value, pred, lamport`` with defaults filled in and UUIDs lowercased.
* ``chain_hash`` of an event is SHA-256 over the previous event's chain hash in its
  space (32 zero bytes before seq 1), the event's payload hash, and the canonical JSON
  of everything else stored: ``[seq, device_id, user_id, client_time, recorded_at,
  schema_version]``. Changing any column of any event therefore changes every later
  chain hash; ``verify`` recomputes both hashes from the columns and names the first
  seq whose stored hash differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

GENESIS = bytes(32)
"""The chain hash "before" seq 1 of every space."""

_ENCODE = msgspec.json.Encoder().encode
_sha256 = hashlib.sha256


class _Payload(msgspec.Struct):
    """The payload object; fields declared in RFC 8785 key order (all ASCII, so code-point
    order), each part canonical on its own (msgspec's strings and integers are RFC
    8785's; ``value`` is already canonical JSON)."""

    entity_id: str
    entity_type: str
    field: str | None
    kind: str
    lamport: int
    op_id: str
    pred: Sequence[str]
    space_id: str
    value: msgspec.Raw


def payload_bytes(
    op_id: str,
    space_id: str,
    entity_type: str,
    entity_id: str,
    kind: str,
    field: str | None,
    value_json: bytes,
    pred: Sequence[str],
    lamport: int,
) -> bytes:
    """RFC 8785 JSON of the payload; ``value_json`` is already canonical (``b"null"`` if none)."""
    return _ENCODE(
        _Payload(
            entity_id,
            entity_type,
            field,
            kind,
            lamport,
            op_id,
            pred,
            space_id,
            msgspec.Raw(value_json),
        )
    )


def payload_digest(
    op_id: str,
    space_id: str,
    entity_type: str,
    entity_id: str,
    kind: str,
    field: str | None,
    value_json: bytes,
    pred: Sequence[str],
    lamport: int,
) -> bytes:
    """SHA-256 of :func:`payload_bytes`."""
    return _sha256(
        payload_bytes(
            op_id, space_id, entity_type, entity_id, kind, field, value_json, pred, lamport
        )
    ).digest()


def chain_hash(
    previous: bytes,
    digest: bytes,
    seq: int,
    device_id: str,
    user_id: str | None,
    client_time: str | None,
    recorded_at: str,
    schema_version: int,
) -> bytes:
    """The chain hash of one event given its predecessor's and its payload digest."""
    rest = _ENCODE((seq, device_id, user_id, client_time, recorded_at, schema_version))
    return _sha256(previous + digest + rest).digest()

"""The simulated devices' op_ids (bench/e2e/wsclient.py): what ``str(uuid.uuid4())``
gives, made cheaper, so the server takes them as any client's."""

from __future__ import annotations

import uuid

from bench.e2e.wsclient import random_op_id
from crdt.validate import is_canonical_uuid


def test_op_ids_are_canonical_random_version_4_uuids() -> None:
    ids = [random_op_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for op_id in ids:
        parsed = uuid.UUID(op_id)
        assert str(parsed) == op_id
        assert is_canonical_uuid(op_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every free hex digit varies, the variant digit over its four values.
    for i in (0, 9, 15, 20, 35):
        assert len({op_id[i] for op_id in ids}) == 16
    assert {op_id[19] for op_id in ids} == set("89ab")

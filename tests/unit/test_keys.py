"""One key per purpose (core/keys.py): HKDF per RFC 5869, and no key serves two uses."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import uuid

import jwt
import pytest

from core.errors import Unauthenticated
from core.keys import Purpose, derive, derive_text, hkdf_sha256
from eventstore.writer import legacy_server_op_id, server_op_id
from gateway.tokens import AccessTokens, RefreshTokens
from scheduler.webhook import sign, signing_secret, verify_signature

ROOT = "root-secret-0123456789abcdef-0123456789"


def test_hkdf_matches_rfc_5869_test_vectors() -> None:
    ikm = bytes.fromhex("0b" * 22)
    okm = hkdf_sha256(
        ikm,
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    empty = hkdf_sha256(ikm, salt=b"", info=b"", length=42)  # test case 3
    assert empty.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_every_purpose_has_its_own_key() -> None:
    keys = {purpose: derive(ROOT, purpose) for purpose in Purpose}
    assert len(set(keys.values())) == len(Purpose)
    assert all(len(k) == 32 for k in keys.values())
    assert ROOT.encode() not in keys.values()
    assert derive(ROOT, Purpose.ACCESS_TOKEN) == derive(ROOT, Purpose.ACCESS_TOKEN)
    assert derive(ROOT, Purpose.ACCESS_TOKEN) != derive(ROOT + "x", Purpose.ACCESS_TOKEN)
    assert derive_text(ROOT, Purpose.WEBHOOK) == keys[Purpose.WEBHOOK].hex()
    with pytest.raises(ValueError, match="root secret"):
        derive("", Purpose.WEBHOOK)


def test_an_access_token_verifies_under_its_key_only() -> None:
    token, _ = AccessTokens(derive(ROOT, Purpose.ACCESS_TOKEN), 900).issue(
        user_id="u", device_id="d", session_id="s", generation="g", now=1_000_000.0
    )
    own = derive(ROOT, Purpose.ACCESS_TOKEN)
    assert jwt.decode(token, own, algorithms=["HS256"], options={"verify_exp": False})["sub"] == "u"
    for key in [ROOT.encode(), *(derive(ROOT, p) for p in Purpose if p != Purpose.ACCESS_TOKEN)]:
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(token, key, algorithms=["HS256"], options={"verify_exp": False})
        with pytest.raises(Unauthenticated):
            AccessTokens(key, 900).verify(token, now=1_000_000.0)


def _uuid8(key: bytes, message: str) -> str:
    n = int.from_bytes(hmac.new(key, message.encode(), hashlib.sha256).digest()[:16], "big")
    n = (n & ~(0xF000 << 64)) | (0x8000 << 64)
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)
    return str(uuid.UUID(int=n))


def test_server_op_ids_use_the_op_id_key_only() -> None:
    key = "reminder_fired:5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"
    op_id = server_op_id(ROOT, key)
    assert op_id == _uuid8(derive(ROOT, Purpose.SERVER_OP_ID), key)
    others = [ROOT.encode(), *(derive(ROOT, p) for p in Purpose if p != Purpose.SERVER_OP_ID)]
    assert all(op_id != _uuid8(k, key) for k in others)
    # The op_id of before the separation is the root-keyed one (looked up, never written).
    assert legacy_server_op_id(ROOT, key) == _uuid8(ROOT.encode(), key)
    assert legacy_server_op_id(ROOT, key) != op_id


#: (key, op_id, op_id of before the key separation) under ROOT, pinned: a firing retried
#: after an upgrade finds its event only if the same key still gives the same op_id.
SERVER_OP_IDS = [
    (
        "reminder_fired:5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01",
        "4443c5a8-5333-80d5-8b67-7ecea025cdaa",
        "4a75c226-3382-89e5-af63-24d1f5efb306",
    ),
    (
        "reminder_skipped:5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01",
        "502fcee7-f3b7-8db9-b560-9ce93f183156",
        "c277d9e7-392b-86b4-a0e9-92ccd69c4bea",
    ),
    (
        "member:0a2b4c6d-0000-4000-8000-000000000001:2",
        "74a6b7c4-cd7e-89c9-9246-31293d636796",
        "8e2fcf8a-d64f-81bc-879b-6426871a437b",
    ),
    (
        "reminder_fired:00000000-0000-4000-8000-000000000000",
        "8b0b2666-ce26-8bf4-a1f5-2daf24066d62",
        "595e298a-0b4a-8ce2-83f5-d9fbe7c8009f",
    ),
]


@pytest.mark.parametrize(("key", "op_id", "legacy"), SERVER_OP_IDS)
def test_a_server_op_id_never_changes_across_releases(key: str, op_id: str, legacy: str) -> None:
    assert server_op_id(ROOT, key) == op_id
    assert legacy_server_op_id(ROOT, key) == legacy
    for made in (uuid.UUID(op_id), uuid.UUID(legacy)):
        assert (made.version, made.variant) == (8, uuid.RFC_4122)


def test_refresh_tokens_use_the_refresh_key_only() -> None:
    token_id = "0d8c6f3e-1c1a-4c55-9a55-2f0d7b8e1c01"
    made = {
        RefreshTokens(k).token(token_id)
        for k in [ROOT.encode(), *(derive(ROOT, p) for p in Purpose)]
    }
    assert len(made) == len(Purpose) + 1


def test_webhooks_are_signed_with_their_secret_or_the_webhook_key_never_the_root() -> None:
    assert signing_secret("shared-with-the-receiver", ROOT) == "shared-with-the-receiver"
    assert signing_secret(None, None) is None
    derived = signing_secret(None, ROOT)
    assert derived == derive(ROOT, Purpose.WEBHOOK).hex()
    body = b'{"type":"reminder_fired"}'
    signature = sign(derived, 1_800_000_000, body)
    assert verify_signature(derived, "1800000000", body, signature, now=1_800_000_000)
    for wrong in [ROOT, *(derive_text(ROOT, p) for p in Purpose if p != Purpose.WEBHOOK)]:
        assert not verify_signature(wrong, "1800000000", body, signature, now=1_800_000_000)


def test_no_two_purposes_share_a_label() -> None:
    labels = [p.value for p in Purpose]
    assert all(a != b and not b.startswith(a) for a, b in itertools.permutations(labels, 2))

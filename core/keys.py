"""One key per purpose, all derived from ``CONCORD_SECRET_KEY`` (docs/auth.md, "Keys").

Nothing is ever keyed with the root secret itself: each use gets its own 256-bit key
from HKDF-SHA256 (RFC 5869) with a distinct label, so a value made for one purpose (a
server op_id, a webhook signature) can never verify as another (an access token), and
learning one derived key tells nothing about the root or the other keys. This module is
the only place that derives them; a new purpose is a new label here.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac

_HASH = hashlib.sha256
_LENGTH = 32
#: HKDF-Extract salt: fixed, so the same root always gives the same keys (they must
#: survive restarts and agree across processes); it only separates Concord's use of the
#: root from any other use an operator might make of the same string.
_SALT = b"concord key derivation v1"


class Purpose(enum.Enum):
    """Every use of a key; the value is the HKDF ``info`` label."""

    ACCESS_TOKEN = b"concord/v1/access-token-jwt-hs256"
    REFRESH_TOKEN = b"concord/v1/refresh-token"
    SERVER_OP_ID = b"concord/v1/server-op-id"
    WEBHOOK = b"concord/v1/webhook-signature"


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = _LENGTH) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract, then expand to ``length`` bytes."""
    if not 0 < length <= 255 * _HASH().digest_size:
        raise ValueError("HKDF output length out of range")
    prk = hmac.new(salt or bytes(_HASH().digest_size), ikm, _HASH).digest()
    okm, block = b"", b""
    for counter in range(1, -(-length // len(prk)) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), _HASH).digest()
        okm += block
    return okm[:length]


@functools.lru_cache(maxsize=64)
def derive(secret_key: str, purpose: Purpose) -> bytes:
    """The 32-byte key of ``purpose`` under the root ``secret_key`` (cached: pure)."""
    if not secret_key:
        raise ValueError("a root secret key is required")
    return hkdf_sha256(secret_key.encode("utf-8"), salt=_SALT, info=purpose.value)


def derive_text(secret_key: str, purpose: Purpose) -> str:
    """The same key as lowercase hex, for interfaces that take a text secret."""
    return derive(secret_key, purpose).hex()

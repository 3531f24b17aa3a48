"""RFC 8785 (JSON Canonicalization Scheme) encoding, fast for the common case.

``rfc8785.dumps`` is exact but pure Python (~20 µs for a small op). msgspec produces the
same bytes for strings, integers, booleans, null, lists, and objects whose keys sort the
same by code point as by UTF-16 code unit (every key below U+E000); floats are where
the two differ (``1.0`` vs ``1``, ``1e+21``). So values without floats and with such keys
take msgspec's path; anything else goes through ``rfc8785``. The equivalence is pinned
by tests/unit/test_eventstore_canonical.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
import rfc8785

__all__ = ["CanonicalError", "canonical_json"]

_ENCODE = msgspec.json.Encoder(order="sorted").encode
#: Above this code point UTF-16 and code-point key orders may disagree.
_KEY_LIMIT = "\ue000"


class CanonicalError(ValueError):
    """The value has no canonical JSON form (non-finite or huge number, bad text)."""


def _msgspec_safe(value: Any) -> bool:
    """True when msgspec's sorted encoding of ``value`` is already RFC 8785."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) or v is None or isinstance(v, bool):
            continue
        if isinstance(v, int):
            # RFC 8785 numbers are IEEE doubles: larger integers are not exact.
            if -(2**53) < v < 2**53:
                continue
            return False
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str) or (k and max(k) >= _KEY_LIMIT):
                    return False
                stack.append(item)
        else:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical JSON bytes of a decoded JSON value."""
    try:
        if _msgspec_safe(value):
            return _ENCODE(value)
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, TypeError, ValueError) as exc:
        raise CanonicalError(f"value has no canonical JSON form: {exc}") from None

"""Ids at the boundary (docs/protocol.md section 2): any spelling ``uuid.UUID`` accepts, known
from then on only in the canonical lower-case hyphenated form.

Every route and message that takes a ``space_id``, ``user_id``, ``device_id`` or
``op_id`` from a client passes it through :func:`canonical_id` once, so two spellings
of one id are one id everywhere behind the boundary (subscriptions, cursors, SQL).
"""

from __future__ import annotations

import re
import uuid

#: Longer input is not an id: ``urn:uuid:{...}`` with hyphens is well under this.
MAX_ID_CHARS = 100
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_id(raw: object) -> str | None:
    """The canonical form of a UUID given in any spelling ``uuid.UUID`` accepts (upper
    case, no hyphens, braces, ``urn:uuid:``), or None when ``raw`` is not one."""
    if not isinstance(raw, str):
        return None
    if len(raw) == 36 and _CANONICAL.fullmatch(raw) is not None:
        return raw
    if len(raw) > MAX_ID_CHARS or not raw.isascii():
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None

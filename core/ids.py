"""Ids at the boundary (docs/protocol.md section 2): any spelling ``uuid.UUID`` accepts, known
from then on only in the canonical lower-case hyphenated form.

Every route and message that takes a ``space_id``, ``user_id``, ``device_id`` or
``op_id`` from a client passes it through :func:`canonical_id` once, so two spellings
of one id are one id everywhere behind the boundary (subscriptions, cursors, SQL). This
is the one UUID parser of the code base (``crdt.validate.is_canonical_uuid`` the one
check of the canonical form); ``CANONICAL_UUID`` is that form as a regular expression,
which the OpenAPI document states too.

Keyset cursors (``next`` of the device, invitation and reminder lists) are
``<microseconds since the epoch>.<canonical uuid>``: :func:`keyset_cursor` writes one,
:func:`parse_keyset_cursor` reads one back, ``KEYSET_CURSOR`` is their pattern.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from crdt.validate import UUID_PATTERN, is_canonical_uuid

#: Longer input is not an id: ``urn:uuid:{...}`` with hyphens is well under this.
MAX_ID_CHARS = 100
#: A UUID as the server writes it: lower case, hyphenated.
CANONICAL_UUID = UUID_PATTERN
#: A keyset cursor: a signed count of microseconds since the epoch, a dot, a UUID.
KEYSET_CURSOR = rf"-?[0-9]{{1,18}}\.{CANONICAL_UUID}"

_KEYSET = re.compile(KEYSET_CURSOR)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def canonical_id(raw: object) -> str | None:
    """The canonical form of a UUID given in any spelling ``uuid.UUID`` accepts (upper
    case, no hyphens, braces, ``urn:uuid:``), or None when ``raw`` is not one."""
    if not isinstance(raw, str):
        return None
    if is_canonical_uuid(raw):
        return raw
    if len(raw) > MAX_ID_CHARS or not raw.isascii():
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def keyset_cursor(at: datetime, row_id: str) -> str:
    """The cursor naming the row (``at``, ``row_id``) of a list ordered by both."""
    return f"{(at.astimezone(UTC) - _EPOCH) // _US}.{row_id}"


def parse_keyset_cursor(raw: str) -> tuple[datetime, str] | None:
    """The (``at``, ``row_id``) a cursor of :func:`keyset_cursor` names, or None when
    ``raw`` is not one (``KEYSET_CURSOR``). A time beyond what ``datetime`` holds is
    taken as its first or last instant: every well-formed cursor names a position."""
    if not raw.isascii() or _KEYSET.fullmatch(raw) is None:
        return None
    text, _, row_id = raw.partition(".")
    micros = int(text)
    lowest = (_FIRST - _EPOCH) // _US
    highest = (_LAST - _EPOCH) // _US
    return _EPOCH + min(max(micros, lowest), highest) * _US, row_id

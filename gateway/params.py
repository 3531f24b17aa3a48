"""Checks and normalisations of what clients put in bodies, paths and queries.

Malformed bodies are 400 ``bad_message``; ids in paths that cannot name anything (not
a UUID, not an entity id) are 404 ``not_found``, like ids that name nothing: a
space's existence is private, so "malformed" and "absent" answer the same.

No string with a NUL or an unpaired surrogate is ever accepted (docs/protocol.md section 2):
body fields are refused as they are decoded (``core.wire``), and these checks refuse
them again, so a handler that takes a string some other way is covered too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeAlias

from litestar import Request
from litestar.exceptions import SerializationException
from litestar.params import PathParameter, QueryParameter

from core.errors import BadMessage, NotFound
from core.ids import canonical_id
from core.wire import lenient_json
from crdt import plain_text

EMAIL_MAX = 254
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
NAME_MAX = 200
BATCH_ID_MAX = 200
DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: Seqs and cursors beyond this are refused (400) before they reach a bigint column.
MAX_SEQ = 2**53 - 1

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_ENTITY_ID = re.compile(r"[A-Za-z0-9_:.\-]{1,128}")


def storable(text: str) -> bool:
    """PostgreSQL ``text`` holds it: no NUL, valid Unicode (no lone surrogates)."""
    return plain_text(text)


def normalise_email(raw: str) -> str:
    """Trimmed and lowercased (the account key); 400 when it cannot be stored at all."""
    if len(raw) > EMAIL_MAX * 4 or not storable(raw):
        raise BadMessage("email: not a valid email address")
    return raw.strip().lower()


def valid_email(raw: str) -> str:
    """The normalised email, or 400 ``bad_message`` when it cannot be one."""
    email = normalise_email(raw)
    if len(email) > EMAIL_MAX or not _EMAIL.fullmatch(email):
        raise BadMessage("email: not a valid email address")
    return email


def valid_password(raw: str, *, registering: bool) -> str:
    if len(raw) > PASSWORD_MAX:
        raise BadMessage(f"password: at most {PASSWORD_MAX} characters")
    if not storable(raw):
        raise BadMessage("password: must not contain NUL or an unpaired surrogate")
    if registering and len(raw) < PASSWORD_MIN:
        raise BadMessage(f"password: at least {PASSWORD_MIN} characters")
    return raw


def valid_name(raw: str, what: str, *, default: str | None = None) -> str:
    """A display name: trimmed, 1..200 characters (``default`` when empty, if given)."""
    name = raw.strip()
    if not name and default is not None:
        return default
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise BadMessage(f"{what}: 1 to {NAME_MAX} printable characters")
    return name


class OpsRequest(Request[Any, Any, Any]):
    """The request of a route whose body carries ops (``POST /v1/sync/push``): JSON that
    msgspec refuses only for an unpaired surrogate escape is decoded again by
    ``core.wire.lenient_json``, so such an op is ``invalid_op`` on its own (docs/protocol.md
    section 2) instead of the whole body being ``bad_message``."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except SerializationException:
            try:
                return lenient_json(await self.body())
            except BadMessage:
                pass
            raise


def canonical_uuid(raw: str) -> str | None:
    """The canonical form of a UUID in any spelling (``core.ids``), or None."""
    return canonical_id(raw)


def path_uuid(raw: str, what: str) -> str:
    """A UUID from a path or a space query: anything else names nothing (404)."""
    value = canonical_uuid(raw)
    if value is None:
        raise NotFound(f"no such {what}")
    return value


def path_entity_id(raw: str) -> str:
    if not _ENTITY_ID.fullmatch(raw):
        raise NotFound("no such entity")
    return raw


def page_size(limit: int | None, *, default: int = DEFAULT_PAGE, cap: int = MAX_PAGE) -> int:
    """A requested page size, clamped to ``cap`` (a larger one is not an error)."""
    return min(default if limit is None else limit, cap)


def int_cursor(raw: str | None, what: str = "after") -> int:
    """A cursor that is a non-negative integer (a seq); 400 otherwise."""
    if raw is None or raw == "":
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise BadMessage(f"{what}: not a valid cursor")
    return int(raw)


def uuid_path(description: str) -> Any:
    """A UUID in the path: documented as ``format: uuid``, checked by ``path_uuid``."""
    return PathParameter(description=description, format="uuid")


def uuid_query(description: str) -> Any:
    """A UUID in the query: documented as ``format: uuid``, checked by ``path_uuid``."""
    return QueryParameter(description=description, format="uuid")


#: ``limit`` of the list routes: default 100, a larger one is clamped to 1000.
PageLimit: TypeAlias = Annotated[
    int | None, QueryParameter(ge=1, description="page size (default 100, clamped to 1000)")
]
#: ``after`` of the list routes: the ``next`` of the previous page, as given.
PageAfter: TypeAlias = Annotated[
    str | None, QueryParameter(description="the `next` of the previous page")
]

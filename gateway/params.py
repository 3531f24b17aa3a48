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
from core.ids import CANONICAL_UUID, KEYSET_CURSOR, canonical_id, parse_keyset_cursor
from core.wire import (
    EMAIL_MAX,
    EMAIL_PATTERN,
    NAME_PATTERN,
    PASSWORD_MAX,
    PASSWORD_MIN,
    TRIMMED,
    lenient_json,
)
from crdt import DEFAULT_SCHEMA, plain_text
from crdt.schema import NAME_RE
from crdt.validate import ENTITY_ID_PATTERN

NAME_MAX = 200
DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: Seqs, cursors and page sizes beyond this are refused (400) before they reach SQL.
MAX_SEQ = 2**53 - 1

_EMAIL = re.compile(EMAIL_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_ENTITY_ID = re.compile(ENTITY_ID_PATTERN)

#: The ``after`` of the space list: the last space_id of the previous page.
SPACE_CURSOR = rf"^{CANONICAL_UUID}$"
#: The ``after`` of the device, invitation and reminder lists (``core.ids``).
KEYSET_AFTER = rf"^{KEYSET_CURSOR}$"
#: The ``after`` of the entity list: ``<entity_type>/<entity_id>`` of the last entity.
ENTITY_CURSOR = rf"^{NAME_RE.pattern}/{ENTITY_ID_PATTERN}$"
#: Entity types a client may read (``_member`` and other internal types are not).
READABLE_TYPES = sorted(t for t in DEFAULT_SCHEMA.entity_types if not t.startswith("_"))


def storable(text: str) -> bool:
    """PostgreSQL ``text`` holds it: no NUL, valid Unicode (no lone surrogates)."""
    return plain_text(text)


def normalise_email(raw: str) -> str:
    """Trimmed and lowercased (the account key); 400 when it cannot be stored at all."""
    if len(raw) > EMAIL_MAX * 4 or not storable(raw):
        raise BadMessage("email: not a valid email address")
    return raw.strip(TRIMMED).lower()


def valid_email(raw: str) -> str:
    """The normalised email, or 400 ``bad_message`` when it is not one (``EMAIL_PATTERN``
    and at most 254 characters as sent: what the OpenAPI document states)."""
    if len(raw) > EMAIL_MAX or not storable(raw) or not _EMAIL.search(raw):
        raise BadMessage("email: not a valid email address")
    return normalise_email(raw)


def valid_password(raw: str, *, registering: bool) -> str:
    if len(raw) > PASSWORD_MAX:
        raise BadMessage(f"password: at most {PASSWORD_MAX} characters")
    if not storable(raw):
        raise BadMessage("password: must not contain NUL or an unpaired surrogate")
    if registering and len(raw) < PASSWORD_MIN:
        raise BadMessage(f"password: at least {PASSWORD_MIN} characters")
    return raw


def valid_name(raw: str, what: str, *, default: str | None = None) -> str:
    """A display name (``NAME_PATTERN``): trimmed, 1..200 characters, none of them a
    control character (``default`` when blank, if given)."""
    name = raw.strip(TRIMMED)
    if not name and default is not None:
        return default
    if not storable(raw) or not _NAME.search(raw):
        raise BadMessage(f"{what}: 1 to {NAME_MAX} characters, no control character")
    return name


#: The answer to JSON whose only fault is an unpaired surrogate escape (``"\ud800"``).
UNPAIRED_SURROGATE = "not valid JSON: a string holds an unpaired surrogate escape (\\ud800-\\udfff)"


class JsonRequest(Request[Any, Any, Any]):
    """Every route's request. JSON that msgspec refuses only for an unpaired surrogate
    escape (msgspec says "Input data was truncated") is decoded again by
    ``core.wire.lenient_json``, each such surrogate a NUL, and ``surrogates`` decides
    what the route makes of it: 400 ``bad_message`` saying so."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except SerializationException:
            try:
                value = lenient_json(await self.body())
            except BadMessage:
                pass
            else:
                return self.surrogates(value)
            raise  # not JSON for another reason: litestar's answer stands

    def surrogates(self, value: Any) -> Any:
        """The decoded body, whose unpaired surrogates are NULs: refused as a whole."""
        raise BadMessage(UNPAIRED_SURROGATE)


class OpsRequest(JsonRequest):
    """The request of a route whose body carries ops (``POST /v1/sync/push``): such a body
    is taken with its NULs, so an op holding one is ``invalid_op`` on its own
    (docs/protocol.md section 2) instead of the whole body being ``bad_message``."""

    def surrogates(self, value: Any) -> Any:
        return value


def path_uuid(raw: str, what: str) -> str:
    """A UUID from a path or a space query: anything else names nothing (404)."""
    value = canonical_id(raw)
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


def given_cursor(raw: str | None, pattern: str) -> str | None:
    """An ``after`` of a route that states ``pattern``: None when absent (the first
    page), the cursor when the whole of it matches, else 400 (an empty one too)."""
    if raw is None:
        return None
    if re.fullmatch(pattern, raw) is None:
        raise BadMessage("after: not a valid cursor")
    return raw


def keyset_after(raw: str | None) -> tuple[Any, str] | None:
    """The position an ``after`` of ``KEYSET_AFTER`` names, or None for the first page."""
    cursor = given_cursor(raw, KEYSET_AFTER)
    return None if cursor is None else parse_keyset_cursor(cursor)


def _integer(low: int, high: int) -> dict[str, Any]:
    """The schema of an integer query parameter: litestar writes ``oneOf`` integer-or-null
    for an optional one (a query holds no null) and drops a minimum of 0."""
    return {"oneOf": None, "type": "integer", "minimum": low, "maximum": high}


def _queries_of(handler: Any) -> frozenset[str]:
    """The query parameters a route handler declares (``QueryParameter``)."""
    fields = handler.parsed_fn_signature.parameters.items()
    return frozenset(n for n, f in fields if isinstance(f.kwarg_definition, QueryParameter))


async def one_value_each(request: Request[Any, Any, Any]) -> None:
    """400 when a query parameter the route declares is given more than once (the app's
    ``before_request``): ``limit=x&limit=5`` would otherwise be read as its last value,
    silently. Unknown query parameters are ignored, repeated or not."""
    repeated = [name for name, values in request.query_params.dict().items() if len(values) > 1]
    if repeated:  # rare: the route's declarations are read only then
        declared = _queries_of(request.route_handler)
        for name in repeated:
            if name in declared:
                raise BadMessage(f"{name}: given more than once")


def absent_or_given(request: Request[Any, Any, Any], name: str, value: object) -> None:
    """400 when an optional query parameter was given but read as None (litestar reads
    ``null`` so for an integer or a choice; the document admits no null)."""
    if value is None and name in request.query_params:
        raise BadMessage(f"{name}: not a valid value")


def uuid_path(description: str) -> Any:
    """A UUID in the path: documented as ``format: uuid``, checked by ``path_uuid``
    (any spelling ``uuid.UUID`` takes; anything else is 404, never 400)."""
    return PathParameter(description=description, format="uuid")


def uuid_query(description: str) -> Any:
    """A UUID in the query: documented as ``format: uuid``, checked by ``path_uuid``."""
    return QueryParameter(description=description, format="uuid")


def seq_query(description: str) -> Any:
    """A seq in the query: 0..2^53-1, else 400."""
    return QueryParameter(
        ge=0, le=MAX_SEQ, description=description, schema_extra=_integer(0, MAX_SEQ)
    )


def limit_query(description: str) -> Any:
    """A page size: 1..2^53-1, else 400; clamped by the route."""
    return QueryParameter(
        ge=1, le=MAX_SEQ, description=description, schema_extra=_integer(1, MAX_SEQ)
    )


def after_query(pattern: str, description: str = "the `next` of the previous page") -> Any:
    """A cursor: the ``next`` of the previous page, as given (absent: the first page).
    Anything ``pattern`` does not match is 400 (``given_cursor``: the whole value,
    as JSON Schema reads a pattern, not ``re.search``'s ``$`` before a final newline)."""
    return QueryParameter(
        description=description,
        schema_extra={"oneOf": None, "type": "string", "pattern": pattern},
    )


#: The entity type of a path: one of the readable types, else 404.
ENTITY_TYPE_PATH: Any = PathParameter(
    description="an entity type of the schema", schema_extra={"enum": READABLE_TYPES}
)
#: The entity id of a path: ``[A-Za-z0-9_:.-]{1,128}``, else 404.
ENTITY_ID_PATH: Any = PathParameter(
    description="the entity's id", schema_extra={"pattern": f"^{ENTITY_ID_PATTERN}$"}
)

#: ``limit`` of the list routes: default 100 (``DEFAULT_PAGE``), a larger one is clamped
#: to 1000. Not optional: ``limit=null`` is no integer, so it is 400 like ``limit=x``.
PageLimit: TypeAlias = Annotated[int, limit_query("page size (default 100, clamped to 1000)")]

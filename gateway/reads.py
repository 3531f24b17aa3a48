"""Reads: merged entity states, one entity (optionally as of a seq), its history, the
schema, and a space's reminders.

An entity list comes from the projector's read model when that has reached the space's
head, else from the space folded from the log; one entity is the read model's state
brought up to the head with the entity's later events; ``as_of_seq`` folds the log. The
answers are the same either way (docs/architecture.md invariant 4). Entity
types outside the schema, ``_member`` included, are not readable: 404 in paths, 400 as
a ``type`` filter.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

import asyncpg
from litestar import Request, Router, get
from litestar.di import Provide
from litestar.params import QueryParameter

import projector.readmodel as readmodel
import scheduler.queries as reminder_queries
from core.errors import BadMessage, NotFound
from core.ops import op_from_event
from core.wire import (
    EntityList,
    EntityResponse,
    HistoryResponse,
    ReminderList,
    ReminderStatus,
)
from crdt import EntityState, EntityTypeSpec, Schema
from gateway.auth import PrincipalDep, provide_principal
from gateway.context import ReadStore, Resource
from gateway.examples import ENTITY_ANSWER, ok
from gateway.openapi import SPACE, USER_SECURITY, errors
from gateway.params import (
    DEFAULT_PAGE,
    ENTITY_CURSOR,
    ENTITY_ID_PATH,
    ENTITY_TYPE_PATH,
    KEYSET_AFTER,
    READABLE_TYPES,
    PageLimit,
    absent_or_given,
    after_query,
    given_cursor,
    page_size,
    path_entity_id,
    seq_query,
    uuid_path,
)
from gateway.spaces import require_member


def entity_spec(schema: Schema, entity_type: str) -> EntityTypeSpec | None:
    return None if entity_type.startswith("_") else schema.entity_types.get(entity_type)


def entity_response(state: EntityState, spec: EntityTypeSpec, seq: int) -> EntityResponse:
    view = state.view(spec)
    return EntityResponse(
        entity_type=view.entity_type,
        entity_id=view.entity_id,
        seq=seq,
        deleted=view.deleted,
        edited_while_deleted=view.edited_while_deleted,
        fields=view.fields,
    )


def _readable(schema: Schema, entity_type: str, entity_id: str) -> tuple[EntityTypeSpec, str]:
    spec = entity_spec(schema, entity_type)
    if spec is None:
        raise NotFound("no such entity type")
    return spec, path_entity_id(entity_id)


def _list_cursor(entity_type: str, entity_id: str) -> str:
    return f"{entity_type}/{entity_id}"


def _page_entities(
    states: dict[tuple[str, str], EntityState],
    schema: Schema,
    entity_type: str | None,
    include_deleted: bool,
    after: str | None,
) -> list[tuple[str, str, EntityState, EntityTypeSpec]]:
    chosen = []
    for (etype, eid), state in sorted(states.items()):
        spec = entity_spec(schema, etype)
        if spec is None or (entity_type is not None and etype != entity_type):
            continue
        if after is not None and _list_cursor(etype, eid) <= after:
            continue
        if not state.has_client_events or (not include_deleted and state.deleted_by()):
            continue
        chosen.append((etype, eid, state, spec))
    return chosen


async def _from_read_model(
    store: ReadStore,
    pool: asyncpg.Pool,
    schema: Schema,
    space_id: str,
    entity_type: str | None,
    deleted: bool,
    size: int,
    after: str | None,
) -> EntityList | None:
    """The page from the projector's read model when it reflects the space's head (it
    folds in a lag of up to ``readmodel.LIST_TAIL_MAX`` events itself); None when the
    projector is further behind (or has not run, or a quarantine), and the log must be
    folded."""
    head = await store.head(space_id)
    try:
        states, seq, cursor = await readmodel.list_entities(
            pool,
            space_id,
            entity_type,
            deleted,
            size,
            None if after is None else after.replace("/", ":", 1),
        )
    except readmodel.InvalidCursor:
        raise BadMessage("after: not a cursor of this listing") from None
    if seq < head:
        return None
    entities = []
    for state in states:
        spec = entity_spec(schema, state.entity_type)
        if spec is not None:
            entities.append(entity_response(state, spec, seq))
    return EntityList(
        entities=entities, seq=seq, next=None if cursor is None else cursor.replace(":", "/", 1)
    )


async def _current_entity(
    store: ReadStore, pool: asyncpg.Pool, space_id: str, entity_type: str, entity_id: str
) -> tuple[EntityState | None, int]:
    """The entity from the read model, brought up to the space's head with the log's tail
    (read-your-writes even while the projector catches up or is not running)."""
    state, seq = await readmodel.get_entity(pool, space_id, entity_type, entity_id)
    head = await store.head(space_id)
    while seq < head:
        tail = await store.entity_events(space_id, entity_type, entity_id, seq, _TAIL_PAGE)
        if state is None and tail:
            state = EntityState.new(entity_type, entity_id)
        for event in tail:
            assert state is not None
            state.apply(op_from_event(event))
        if len(tail) < _TAIL_PAGE:
            break
        seq = tail[-1].seq
    return state, max(seq, head)


_TAIL_PAGE = 1000


@get(
    "/{space_id:str}/entities",
    responses=errors(*SPACE),
    summary="Merged current states of a space's entities",
)
async def list_entities(
    space_id: Annotated[str, uuid_path("the space")],
    principal: PrincipalDep,
    request: Request[Any, Any, Any],
    store: Resource[ReadStore],
    pool: Resource[asyncpg.Pool],
    schema: Resource[Schema],
    type: Annotated[
        str | None,
        QueryParameter(
            description="only this entity type",
            schema_extra={"oneOf": None, "type": "string", "enum": READABLE_TYPES},
        ),
    ] = None,
    include_deleted: Annotated[bool, QueryParameter(description="also deleted entities")] = False,
    limit: PageLimit = DEFAULT_PAGE,
    after: Annotated[str | None, after_query(ENTITY_CURSOR)] = None,
) -> EntityList:
    """Ordered by (entity_type, entity_id); every state reflects the same ``seq``."""
    absent_or_given(request, "type", type)
    after = given_cursor(after, ENTITY_CURSOR)
    target, _ = await require_member(store, principal, space_id)
    if type is not None and entity_spec(schema, type) is None:
        raise BadMessage("type: not an entity type of the schema")
    size = page_size(limit)
    current = await _from_read_model(
        store, pool, schema, target, type, include_deleted, size, after
    )
    if current is not None:
        return current
    states, seq = await store.replay_space(target)
    chosen = _page_entities(states, schema, type, include_deleted, after)
    page = chosen[:size]
    entities = [entity_response(state, spec, seq) for _, _, state, spec in page]
    more = len(chosen) > size
    return EntityList(
        entities=entities, seq=seq, next=_list_cursor(*page[-1][:2]) if more else None
    )


@get(
    "/{space_id:str}/entities/{entity_type:str}/{entity_id:str}",
    responses={**ok(200, EntityResponse, "merged state", ENTITY_ANSWER), **errors(*SPACE)},
    summary="One entity's merged state",
)
async def read_entity(
    space_id: Annotated[str, uuid_path("the space")],
    entity_type: Annotated[str, ENTITY_TYPE_PATH],
    entity_id: Annotated[str, ENTITY_ID_PATH],
    principal: PrincipalDep,
    store: Resource[ReadStore],
    pool: Resource[asyncpg.Pool],
    schema: Resource[Schema],
    request: Request[Any, Any, Any],
    as_of_seq: Annotated[int | None, seq_query("replay the log up to this seq")] = None,
) -> EntityResponse:
    """404 when the entity has no client event (up to ``as_of_seq``)."""
    absent_or_given(request, "as_of_seq", as_of_seq)
    target, _ = await require_member(store, principal, space_id)
    spec, eid = _readable(schema, entity_type, entity_id)
    if as_of_seq is None:
        state, seq = await _current_entity(store, pool, target, entity_type, eid)
    else:
        state, seq = await store.replay_entity(target, entity_type, eid, as_of_seq)
    if state is None or not state.has_client_events:
        raise NotFound("no such entity")
    return entity_response(state, spec, seq)


@get(
    "/{space_id:str}/entities/{entity_type:str}/{entity_id:str}/history",
    responses=errors(*SPACE),
    summary="One entity's events in seq order",
)
async def entity_history(
    space_id: Annotated[str, uuid_path("the space")],
    entity_type: Annotated[str, ENTITY_TYPE_PATH],
    entity_id: Annotated[str, ENTITY_ID_PATH],
    principal: PrincipalDep,
    store: Resource[ReadStore],
    schema: Resource[Schema],
    limit: PageLimit = DEFAULT_PAGE,
    after: Annotated[int, seq_query("a seq (`next`)")] = 0,
) -> HistoryResponse:
    """Client and server events of the entity; empty for an entity never written."""
    target, _ = await require_member(store, principal, space_id)
    _, eid = _readable(schema, entity_type, entity_id)
    size = page_size(limit)
    events = await store.entity_events(target, entity_type, eid, after, size + 1)
    page = events[:size]
    return HistoryResponse(events=page, next=str(page[-1].seq) if len(events) > size else None)


@get(
    "/{space_id:str}/reminders",
    responses=errors(*SPACE),
    summary="Every reminder of a space, whatever its status",
)
async def list_reminders(
    space_id: Annotated[str, uuid_path("the space")],
    principal: PrincipalDep,
    store: Resource[ReadStore],
    pool: Resource[asyncpg.Pool],
    request: Request[Any, Any, Any],
    status: Annotated[
        ReminderStatus | None,
        QueryParameter(
            description="only this status",
            schema_extra={"oneOf": None, "type": "string", "enum": list(get_args(ReminderStatus))},
        ),
    ] = None,
    limit: PageLimit = DEFAULT_PAGE,
    after: Annotated[str | None, after_query(KEYSET_AFTER)] = None,
) -> ReminderList:
    """The scheduler's rows for the space (scheduled, fired, cancelled, retrying, dead,
    skipped), ordered by due time, paged."""
    absent_or_given(request, "status", status)
    await require_member(store, principal, space_id)
    page, cursor = await reminder_queries.list_reminders(
        pool, space_id, status, limit, given_cursor(after, KEYSET_AFTER)
    )
    return ReminderList(reminders=page, next=cursor)


spaces_reads_router = Router(
    path="/v1/spaces",
    route_handlers=[list_entities, read_entity, entity_history, list_reminders],
    dependencies={"principal": Provide(provide_principal)},
    security=USER_SECURITY,
    tags=["reads"],
)


@get("/v1/schema", responses=errors(405), tags=["reads"], summary="The schema and its version")
async def read_schema(schema: Resource[Schema]) -> Schema:
    """Entity types, their fields, merge rules and limits (docs/protocol.md section 3)."""
    return schema

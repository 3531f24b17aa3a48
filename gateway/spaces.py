"""Spaces and membership: create, list, invite or re-role, remove.

A space's existence is private: a non-member gets 404 ``not_found`` on every space
route, exactly as for a space that does not exist. Only owners manage members
(others get 403 ``forbidden``), except that any member may remove themselves.
"""

from __future__ import annotations

from typing import Annotated

from litestar import HttpMethod, MediaType, Response, Router, delete, get, post, route
from litestar.di import Provide
from litestar.openapi import ResponseSpec

from core.errors import BadMessage, Forbidden, NotFound
from core.wire import AddMemberRequest, CreateSpaceRequest, Role, SpaceCreated, SpaceInfo, SpaceList
from gateway import accounts
from gateway.auth import Principal, PrincipalDep, provide_principal
from gateway.context import Gateway, GatewayDep
from gateway.examples import MEMBER_BODY, SPACE_BODY
from gateway.openapi import AUTHED, SPACE, USER_SECURITY, errors
from gateway.params import (
    PageAfter,
    PageLimit,
    canonical_uuid,
    page_size,
    path_uuid,
    uuid_path,
    valid_email,
    valid_name,
)


async def require_member(gw: Gateway, principal: Principal, raw_space_id: str) -> tuple[str, Role]:
    """The canonical space id and the caller's role; 404 for anyone else."""
    space_id = path_uuid(raw_space_id, "space")
    role = await gw.store.role_of(space_id, principal.user_id)
    if role is None:
        raise NotFound("no such space")
    return space_id, role


async def require_owner(gw: Gateway, principal: Principal, raw_space_id: str) -> str:
    space_id, role = await require_member(gw, principal, raw_space_id)
    if role != "owner":
        raise Forbidden("only owners manage members")
    return space_id


@route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False)
def spaces_options() -> Response[None]:
    """``OPTIONS /v1/spaces``. Litestar's automatic OPTIONS handler of a path shared by
    two handlers advertises only the first one's method; this one lists both."""
    return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})


@post("/", status_code=201, responses=errors(*AUTHED, 413), summary="Create a space")
async def create_space(
    data: Annotated[CreateSpaceRequest, SPACE_BODY], principal: PrincipalDep, gw: GatewayDep
) -> SpaceCreated:
    """201 ``{space_id}``; the creator is its owner (``member_added`` is seq 1)."""
    name = valid_name(data.name, "name")
    space_id = await gw.store.create_space(
        name=name, creator_user_id=principal.user_id, personal=False
    )
    return SpaceCreated(space_id=space_id)


@get("/", responses=errors(*AUTHED), summary="The caller's spaces with their roles")
async def list_spaces(
    principal: PrincipalDep,
    gw: GatewayDep,
    limit: PageLimit = None,
    after: PageAfter = None,
) -> SpaceList:
    """Ordered by space_id; ``next`` is set when more follow."""
    size = page_size(limit)
    cursor = None
    if after:
        cursor = canonical_uuid(after)
        if cursor is None:
            raise BadMessage("after: not a valid cursor")
    spaces = sorted(await gw.store.spaces_of(principal.user_id), key=lambda s: s.space_id)
    if cursor is not None:
        spaces = [s for s in spaces if s.space_id > cursor]
    page = [
        SpaceInfo(space_id=s.space_id, name=s.name, role=s.role, personal=s.personal)
        for s in spaces[:size]
    ]
    more = len(spaces) > size
    return SpaceList(spaces=page, next=page[-1].space_id if more else None)


@post(
    "/{space_id:str}/members",
    status_code=202,
    responses={
        202: ResponseSpec(None, description="Accepted: a member event, or an invitation"),
        **errors(*SPACE, 403, 409, 413),
    },
    summary="Add a member by email, or change their role",
)
async def add_member(
    space_id: Annotated[str, uuid_path("the space")],
    data: Annotated[AddMemberRequest, MEMBER_BODY],
    principal: PrincipalDep,
    gw: GatewayDep,
) -> Response[bytes]:
    """202 whether or not the email has an account: an invitation applies at registration."""
    target_space = await require_owner(gw, principal, space_id)
    email = valid_email(data.email)
    late_user: str | None = None
    async with gw.pool.acquire() as conn:
        user_id = await accounts.user_id_by_email(conn, email)
        if user_id is None:
            await accounts.upsert_invitation(
                conn, target_space, email, data.role, principal.user_id
            )
            # The email may have registered between the lookup and the insert, and its
            # registration may have missed this invitation: then apply it here.
            late_user = await accounts.user_id_by_email(conn, email)
    if user_id is None:
        if late_user is not None:
            await gw.sessions.apply_invitations(email, late_user)
    else:
        event = await gw.store.change_member(
            space_id=target_space, user_id=user_id, role=data.role, by=principal.user_id
        )
        await gw.hints.membership(event)
    return Response(content=b"", status_code=202, media_type=MediaType.TEXT)


@delete(
    "/{space_id:str}/members/{user_id:str}",
    status_code=204,
    responses=errors(401, 403, 404, 405, 409, 503),
    summary="Remove a member",
)
async def remove_member(
    space_id: Annotated[str, uuid_path("the space")],
    user_id: Annotated[str, uuid_path("the member to remove")],
    principal: PrincipalDep,
    gw: GatewayDep,
) -> None:
    """204 and a ``member_removed`` event; the last owner cannot be removed (409)."""
    target_space, role = await require_member(gw, principal, space_id)
    target_user = path_uuid(user_id, "member")
    if role != "owner" and target_user != principal.user_id:
        raise Forbidden("only owners manage members")
    if await gw.store.role_of(target_space, target_user) is None:
        raise NotFound("no such member")
    event = await gw.store.change_member(
        space_id=target_space, user_id=target_user, role=None, by=principal.user_id
    )
    await gw.hints.membership(event)


spaces_router = Router(
    path="/v1/spaces",
    route_handlers=[spaces_options, create_space, list_spaces, add_member, remove_member],
    dependencies={"principal": Provide(provide_principal)},
    security=USER_SECURITY,
    tags=["spaces"],
)

"""Spaces and membership: create, list, invite or re-role, remove; pending invitations.

A space's existence is private: a non-member gets 404 ``not_found`` on every space
route, exactly as for a space that does not exist. Only owners manage members and
invitations (others get 403 ``forbidden``), except that any member may remove
themselves. Invitation codes are used at ``POST /v1/invitations/accept``
(gateway/invitations.py).
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from litestar import HttpMethod, Response, Router, delete, get, post, route
from litestar.di import Provide

from core.errors import Forbidden, NotFound
from core.ports import EventStore, RoleChange
from core.wire import (
    AddMemberRequest,
    CreateSpaceRequest,
    InvitationCreated,
    InvitationList,
    MemberRole,
    Role,
    SpaceCreated,
    SpaceInfo,
    SpaceList,
    format_time,
)
from gateway import accounts
from gateway.auth import Principal, PrincipalDep, provide_principal
from gateway.context import ReadStore, Resource
from gateway.examples import (
    INVITATION_ANSWER,
    INVITATIONS_ANSWER,
    MEMBER_BODY,
    MEMBER_ROLE_ANSWER,
    SPACE_BODY,
    ok,
)
from gateway.invitations import (
    INVITATION_TTL_SECONDS,
    info,
    new_code,
    page_cursor,
)
from gateway.openapi import AUTHED, SPACE, USER_SECURITY, errors
from gateway.params import (
    DEFAULT_PAGE,
    KEYSET_AFTER,
    SPACE_CURSOR,
    PageLimit,
    after_query,
    given_cursor,
    keyset_after,
    page_size,
    path_uuid,
    uuid_path,
    valid_email,
    valid_name,
)


async def require_member(
    store: EventStore, principal: Principal, raw_space_id: str
) -> tuple[str, Role]:
    """The canonical space id and the caller's role; 404 for anyone else."""
    space_id = path_uuid(raw_space_id, "space")
    role = await store.role_of(space_id, principal.user_id)
    if role is None:
        raise NotFound("no such space")
    return space_id, role


async def require_owner(store: EventStore, principal: Principal, raw_space_id: str) -> str:
    space_id, role = await require_member(store, principal, raw_space_id)
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
    data: Annotated[CreateSpaceRequest, SPACE_BODY],
    principal: PrincipalDep,
    store: Resource[ReadStore],
) -> SpaceCreated:
    """201 ``{space_id}``; the creator is its owner (``member_added`` is seq 1)."""
    name = valid_name(data.name, "name")
    space_id = await store.create_space(
        name=name, creator_user_id=principal.user_id, personal=False
    )
    return SpaceCreated(space_id=space_id)


@get("/", responses=errors(*AUTHED), summary="The caller's spaces with their roles")
async def list_spaces(
    principal: PrincipalDep,
    store: Resource[ReadStore],
    limit: PageLimit = DEFAULT_PAGE,
    after: Annotated[str | None, after_query(SPACE_CURSOR)] = None,
) -> SpaceList:
    """Ordered by space_id; ``next`` is set when more follow."""
    size = page_size(limit)
    cursor = given_cursor(after, SPACE_CURSOR)
    spaces = sorted(await store.spaces_of(principal.user_id), key=lambda s: s.space_id)
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
        **ok(202, InvitationCreated, "an invitation: hand its code over", INVITATION_ANSWER),
        **ok(200, MemberRole, "already a member: the role is set at once", MEMBER_ROLE_ANSWER),
        **errors(*SPACE, 403, 409, 413),
    },
    summary="Invite an email into the space, or change a member's role",
)
async def add_member(
    space_id: Annotated[str, uuid_path("the space")],
    data: Annotated[AddMemberRequest, MEMBER_BODY],
    principal: PrincipalDep,
    store: Resource[ReadStore],
    pool: Resource[asyncpg.Pool],
) -> Response[InvitationCreated | MemberRole]:
    """202 ``{invitation_id, code, expires_at}`` whether or not the email has an account:
    nothing is granted until someone accepts the code. For a member's email, 200
    ``{space_id, user_id, role}``: the role is set at once (``member_role_changed``)."""
    target_space = await require_owner(store, principal, space_id)
    email = valid_email(data.email)
    async with pool.acquire() as conn:
        user_id = await accounts.user_id_by_email(conn, email)
    code, digest = new_code()
    outcome = await store.invite(
        space_id=target_space,
        email=email,
        role=data.role,
        by=principal.user_id,
        code_digest=digest,
        ttl_seconds=INVITATION_TTL_SECONDS,
        user_id=user_id,
    )
    if isinstance(outcome, RoleChange):
        member = MemberRole(space_id=outcome.space_id, user_id=outcome.user_id, role=outcome.role)
        return Response(member, status_code=200)
    created = InvitationCreated(
        invitation_id=outcome.invitation_id, code=code, expires_at=format_time(outcome.expires_at)
    )
    return Response(created, status_code=202)


@get(
    "/{space_id:str}/invitations",
    responses={
        **ok(200, InvitationList, "pending invitations", INVITATIONS_ANSWER),
        **errors(*SPACE, 403),
    },
    summary="Pending invitations of the space (owners only)",
)
async def list_invitations(
    space_id: Annotated[str, uuid_path("the space")],
    principal: PrincipalDep,
    store: Resource[ReadStore],
    limit: PageLimit = DEFAULT_PAGE,
    after: Annotated[str | None, after_query(KEYSET_AFTER)] = None,
) -> InvitationList:
    """Oldest first; never the codes. Used, cancelled and expired invitations are gone."""
    target_space = await require_owner(store, principal, space_id)
    size = page_size(limit)
    rows = await store.invitations_of(target_space, after=keyset_after(after), limit=size + 1)
    page = rows[:size]
    more = len(rows) > size
    return InvitationList(
        invitations=[info(i) for i in page], next=page_cursor(page[-1]) if more else None
    )


@delete(
    "/{space_id:str}/invitations/{invitation_id:str}",
    status_code=204,
    responses=errors(400, 401, 403, 404, 405, 503),
    summary="Cancel a pending invitation (owners only)",
)
async def cancel_invitation(
    space_id: Annotated[str, uuid_path("the space")],
    invitation_id: Annotated[str, uuid_path("the invitation")],
    principal: PrincipalDep,
    store: Resource[ReadStore],
) -> None:
    """204; its code stops working at once. 404 for an invitation that is not pending."""
    target_space = await require_owner(store, principal, space_id)
    target = path_uuid(invitation_id, "invitation")
    if not await store.cancel_invitation(space_id=target_space, invitation_id=target):
        raise NotFound("no such invitation")


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
    store: Resource[ReadStore],
) -> None:
    """204 and a ``member_removed`` event; the last owner cannot be removed (409)."""
    target_space, role = await require_member(store, principal, space_id)
    target_user = path_uuid(user_id, "member")
    if role != "owner" and target_user != principal.user_id:
        raise Forbidden("only owners manage members")
    if await store.role_of(target_space, target_user) is None:
        raise NotFound("no such member")
    await store.change_member(
        space_id=target_space, user_id=target_user, role=None, by=principal.user_id
    )


spaces_router = Router(
    path="/v1/spaces",
    route_handlers=[
        spaces_options,
        create_space,
        list_spaces,
        add_member,
        remove_member,
        list_invitations,
        cancel_invitation,
    ],
    dependencies={"principal": Provide(provide_principal)},
    security=USER_SECURITY,
    tags=["spaces"],
)

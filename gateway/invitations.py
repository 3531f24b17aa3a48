"""Invitation codes and ``POST /v1/invitations/accept`` (docs/protocol.md section 6).

An invitation is a capability: a random code (256 bits, ``secrets.token_urlsafe(32)``)
that whoever signs in and presents it may use once, within 7 days, while its inviter is
still an owner of the space. Only the code's SHA-256 is stored, so the database never
holds a usable code; like refresh tokens, a presented code is found by its digest. The
owner routes (invite, list, cancel) are in gateway/spaces.py; the rules live in
eventstore/invitations.py, under the space row lock.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from litestar import Router, post
from litestar.di import Provide

from core.errors import NotFound
from core.ids import keyset_cursor
from core.ports import Invitation
from core.wire import AcceptInvitationRequest, InvitationAccepted, InvitationInfo, format_time
from gateway.auth import PrincipalDep, provide_principal
from gateway.context import ReadStore, Resource
from gateway.examples import ACCEPT_ANSWER, ACCEPT_BODY, ok
from gateway.openapi import USER_SECURITY, errors

#: How long an invitation may be used (docs/protocol.md section 6: 7 days).
INVITATION_TTL_SECONDS = 7 * 24 * 3600


def new_code() -> tuple[str, bytes]:
    """A fresh invitation code and the digest that is stored instead of it."""
    code = secrets.token_urlsafe(32)
    return code, code_digest(code)


def code_digest(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


def info(invitation: Invitation) -> InvitationInfo:
    """The owners' view of a pending invitation: everything but its code."""
    return InvitationInfo(
        invitation_id=invitation.invitation_id,
        email=invitation.email,
        role=invitation.role,
        invited_by=invitation.invited_by,
        created_at=format_time(invitation.created_at),
        expires_at=format_time(invitation.expires_at),
    )


def page_cursor(invitation: Invitation) -> str:
    """``next`` of the list: a keyset cursor on (created_at, invitation_id)."""
    return keyset_cursor(invitation.created_at, invitation.invitation_id)


@post(
    "/accept",
    status_code=200,
    responses={
        **ok(200, InvitationAccepted, "joined the space", ACCEPT_ANSWER),
        **errors(400, 401, 404, 405, 413, 503),
    },
    summary="Join a space with an invitation code",
)
async def accept_invitation(
    data: Annotated[AcceptInvitationRequest, ACCEPT_BODY],
    principal: PrincipalDep,
    store: Resource[ReadStore],
) -> InvitationAccepted:
    """200 ``{space_id, role}`` and a ``member_added`` event by the inviter, if the code
    is pending, unexpired and its inviter still an owner; otherwise 404 ``not_found``,
    one answer for every reason. A code is used once. A member keeps a higher role than
    the invited one (no event then) and gets ``member_role_changed`` for a lower one."""
    accepted = await store.accept_invitation(
        code_digest=code_digest(data.code), user_id=principal.user_id
    )
    if accepted is None:
        raise NotFound("no such invitation")
    return InvitationAccepted(space_id=accepted.space_id, role=accepted.role)


invitations_router = Router(
    path="/v1/invitations",
    route_handlers=[accept_invitation],
    dependencies={"principal": Provide(provide_principal)},
    security=USER_SECURITY,
    tags=["spaces"],
)

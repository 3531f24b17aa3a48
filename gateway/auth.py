"""``/v1/auth/*`` and the ``principal`` dependency every user route authenticates with.

Checks of a bearer token, in order: signature and shape (401 ``unauthenticated``),
revocation of its session or generation (401 ``unauthenticated``), expiry (401
``auth_expired``, retryable: refresh and resend).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, TypeAlias

import msgspec
from litestar import Request, Router, post
from litestar.di import NamedDependency, Provide

from core.errors import AuthExpired, Unauthenticated
from core.ids import canonical_id
from core.metrics import AUTH_FAILURES
from core.wire import AuthResponse, LoginRequest, RefreshRequest, RegisterRequest
from gateway.context import Resource
from gateway.examples import AUTH_ANSWER, LOGIN_BODY, REFRESH_BODY, REGISTER_BODY, ok
from gateway.limits import LoginThrottle, address_key
from gateway.openapi import USER_SECURITY, errors
from gateway.params import (
    normalise_email,
    valid_email,
    valid_name,
    valid_password,
)
from gateway.revocation import RevocationCache
from gateway.sessions import Sessions
from gateway.tokens import AccessTokens

_DEFAULT_DEVICE_NAME = "Unnamed device"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller of a request."""

    user_id: str
    device_id: str
    session_id: str
    generation: str
    expires_at: int


#: A handler parameter injected by name from the ``principal`` dependency.
PrincipalDep: TypeAlias = NamedDependency[Principal]


def bearer_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        AUTH_FAILURES.labels(reason="missing_token").inc()
        raise Unauthenticated("a bearer access token is required")
    return token.strip()


async def verify_access(
    access: AccessTokens, revocations: RevocationCache, token: str
) -> Principal:
    """The principal of an access token, or the 401 that token deserves."""
    try:
        claims = access.verify(token, now=time.time())
    except Unauthenticated:
        AUTH_FAILURES.labels(reason="invalid_token").inc()
        raise
    if await revocations.is_revoked(claims.session_id, claims.generation):
        AUTH_FAILURES.labels(reason="revoked").inc()
        raise Unauthenticated("this session was revoked")
    if claims.expired:
        AUTH_FAILURES.labels(reason="expired").inc()
        raise AuthExpired("access token expired; refresh and resend")
    return Principal(
        user_id=claims.user_id,
        device_id=claims.device_id,
        session_id=claims.session_id,
        generation=claims.generation,
        expires_at=claims.expires_at,
    )


async def provide_principal(
    request: Request[Any, Any, Any],
    access: Resource[AccessTokens],
    revocations: Resource[RevocationCache],
) -> Principal:
    """The ``principal`` dependency: the caller, or 401."""
    return await verify_access(access, revocations, bearer_token(request))


def client_address(request: Request[Any, Any, Any]) -> str:
    """The address the login limits count: the TCP peer, or the client a trusted proxy
    names (uvicorn applies ``X-Forwarded-For`` only from CONCORD_TRUSTED_PROXIES)."""
    return address_key(request.client.host if request.client else "")


@post(
    "/register",
    status_code=201,
    responses={
        **ok(201, AuthResponse, "signed in on a new device", AUTH_ANSWER),
        **errors(400, 405, 409, 413, 429, 503),
    },
    summary="Create an account, its first device and its personal space",
)
async def register(
    data: Annotated[RegisterRequest, REGISTER_BODY],
    request: Request[Any, Any, Any],
    login_throttle: Resource[LoginThrottle],
    sessions: Resource[Sessions],
) -> AuthResponse:
    """201 with a session for a new device; 409 ``conflict`` when the email is taken."""
    email = valid_email(data.email)
    password = valid_password(data.password, registering=True)
    name = valid_name(data.device_name, "device_name", default=_DEFAULT_DEVICE_NAME)
    login_throttle.attempt(email=None, address=client_address(request), now=time.monotonic())
    return await sessions.register(email, password, name)


@post(
    "/login",
    status_code=200,
    responses={
        **ok(200, AuthResponse, "a new session", AUTH_ANSWER),
        **errors(400, 401, 405, 413, 429, 503),
    },
    summary="Sign in: a new session for the named device, or for a new device",
)
async def login(
    data: Annotated[LoginRequest, LOGIN_BODY],
    request: Request[Any, Any, Any],
    login_throttle: Resource[LoginThrottle],
    sessions: Resource[Sessions],
) -> AuthResponse:
    """An unknown email and a wrong password both answer 401 ``unauthenticated``."""
    email = normalise_email(data.email)
    password = valid_password(data.password, registering=False)
    name = valid_name(data.device_name, "device_name", default=_DEFAULT_DEVICE_NAME)
    device_id = canonical_id(data.device_id) if data.device_id else None
    throttle, address = login_throttle, client_address(request)
    wait = throttle.attempt(email=email, address=address, now=time.monotonic())
    if wait > 0:
        # The account-wide slow-down: a wait, never a refusal, so the owner's right
        # password is checked at most login_delay_max_seconds later (docs/auth.md).
        await asyncio.sleep(wait)
    user = await sessions.authenticate_password(email, password)
    if user is None:
        throttle.failed(email, address, time.monotonic())
        AUTH_FAILURES.labels(reason="bad_credentials").inc()
        raise Unauthenticated("wrong email or password")
    throttle.succeeded(email, address)
    return await sessions.login(user, name, device_id)


@post(
    "/refresh",
    status_code=200,
    responses={
        **ok(200, AuthResponse, "a new pair", AUTH_ANSWER),
        **errors(400, 401, 405, 413, 503),
    },
    summary="Rotate a refresh token for a new pair",
)
async def refresh(
    data: Annotated[RefreshRequest, REFRESH_BODY], sessions: Resource[Sessions]
) -> AuthResponse:
    """A spent token is 401 ``refresh_reused`` (and ends that session) unless it is a
    retry within the grace window (docs/auth.md)."""
    return await sessions.refresh(data.refresh_token)


@post(
    "/logout",
    status_code=204,
    responses=errors(401, 405, 503),
    security=USER_SECURITY,
    dependencies={"principal": Provide(provide_principal)},
    summary="End this device's session",
)
async def logout(principal: PrincipalDep, sessions: Resource[Sessions]) -> None:
    """204; the session's refresh and access tokens stop working at once."""
    await sessions.logout(principal.session_id)


auth_router = Router(
    path="/v1/auth", route_handlers=[register, login, refresh, logout], tags=["auth"]
)

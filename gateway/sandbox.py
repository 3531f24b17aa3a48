"""The live sandbox (docs/sandbox.md): ``GET /sandbox``, its assets, the JavaScript client,
and two sandbox-only JSON routes. Mounted only when ``CONCORD_SANDBOX`` is on, which
``concord dev`` does by default and ``concord gateway`` never does unless told; the
settings refuse it together with ``CONCORD_PRODUCTION``. Off, every route here is 404.

* ``POST /v1/sandbox/token``: a copy of the caller's own access token that expires
  sooner (1 to ``MAX_TTL_SECONDS``, and never later than the presented token). Same
  user, device, session and generation, so revocation ends it like the original; it
  grants nothing the caller did not hold, and the refresh token is untouched. It is how
  the page makes a token expire under a queue on demand.
* ``GET /v1/sandbox/figures``: the caller's own figures (gateway/sandbox_figures.py),
  so the page needs no admin token.

The page loads the client straight from the repository's ``js/`` directory
(``/sandbox/js/concord.js`` and ``/sandbox/js/src/*.js``), found beside the ``gateway``
package: a source checkout or an editable install (``make dev``). Without it those
routes answer 404 naming the missing directory.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Response, Router, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Body, FromPath

from core.errors import BadMessage, NotFound
from gateway.auth import PrincipalDep, provide_principal
from gateway.context import ReadStore, Resource
from gateway.openapi import USER_SECURITY, errors
from gateway.panel import PAGE_HEADERS
from gateway.sandbox_figures import ConflictFolds, UserFigures, user_figures
from gateway.tokens import AccessTokens, iso_utc

STATIC = Path(__file__).with_name("static")
PAGE_DIR = STATIC / "sandbox"
#: The JavaScript client: the repository's ``js/`` beside this package.
JS_DIR = Path(__file__).resolve().parents[1] / "js"
MAX_TTL_SECONDS = 300
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\.(js|css)")
_TYPES = {"js": "text/javascript", "css": "text/css"}
#: Where the page's own modules live; ``charts.js`` is shared with /diagnostics.
_SHARED = {"charts.js": STATIC / "charts.js"}


class SandboxTokenRequest(msgspec.Struct, frozen=True, kw_only=True):
    #: Seconds the new token lives: 1 to 300 (and never past the presented token).
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_SECONDS)]


class SandboxToken(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    access_expires_at: str


def _file(path: Path, name: str) -> Response[bytes]:
    match = _NAME.fullmatch(name)
    if match is None or not path.is_file():
        raise NotFound("no such asset")
    return Response(
        path.read_bytes(),
        media_type=_TYPES[match.group(1)],
        headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
    )


@get("/sandbox", media_type="text/html", include_in_schema=False)
async def sandbox_page() -> Response[bytes]:
    """The page shell; it signs up its own throwaway user (no token in the address)."""
    return Response(
        (PAGE_DIR / "sandbox.html").read_bytes(), media_type="text/html", headers=PAGE_HEADERS
    )


@get("/sandbox/assets/{name:str}", include_in_schema=False)
async def sandbox_asset(name: FromPath[str]) -> Response[bytes]:
    return _file(_SHARED.get(name, PAGE_DIR / name), name)


def _js(path: Path, name: str) -> Response[bytes]:
    if not JS_DIR.is_dir():
        raise NotFound(f"the JavaScript client is not here ({JS_DIR}): run from a checkout")
    return _file(path, name)


@get("/sandbox/js/concord.js", include_in_schema=False)
async def sandbox_client() -> Response[bytes]:
    return _js(JS_DIR / "concord.js", "concord.js")


@get("/sandbox/js/src/{name:str}", include_in_schema=False)
async def sandbox_client_module(name: FromPath[str]) -> Response[bytes]:
    return _js(JS_DIR / "src" / name, name)


@post(
    "/v1/sandbox/token",
    status_code=200,
    responses=errors(400, 401, 404, 405),
    security=USER_SECURITY,
    summary="Sandbox only: the caller's access token again, expiring sooner",
)
async def short_token(
    data: Annotated[SandboxTokenRequest, Body()],
    principal: PrincipalDep,
    access: Resource[AccessTokens],
) -> SandboxToken:
    """A token of the caller's own session and generation that lives ``ttl_seconds``
    (1..300), never past the presented token's expiry."""
    if not 1 <= data.ttl_seconds <= MAX_TTL_SECONDS:
        raise BadMessage(f"ttl_seconds: 1 to {MAX_TTL_SECONDS}")
    now = time.time()
    expires_at = min(int(now + data.ttl_seconds), principal.expires_at)
    token = access.sign(
        user_id=principal.user_id,
        device_id=principal.device_id,
        session_id=principal.session_id,
        generation=principal.generation,
        issued_at=int(now),
        expires_at=expires_at,
    )
    return SandboxToken(access_token=token, access_expires_at=iso_utc(expires_at))


@get(
    "/v1/sandbox/figures",
    responses=errors(401, 404, 405, 503),
    security=USER_SECURITY,
    summary="Sandbox only: the caller's own figures per failure mode",
)
async def figures(
    principal: PrincipalDep,
    store: Resource[ReadStore],
    pool: Resource[asyncpg.Pool],
    folds: Resource[ConflictFolds],
) -> UserFigures:
    """Counts over the caller's spaces, devices and sessions (never a field value)."""
    return await user_figures(store, pool, folds, principal.user_id)


def sandbox_router() -> Router:
    """The sandbox's routes (mounted by ``create_app`` only when the sandbox is on)."""
    return Router(
        path="/",
        route_handlers=[
            sandbox_page,
            sandbox_asset,
            sandbox_client,
            sandbox_client_module,
            short_token,
            figures,
        ],
        dependencies={
            "principal": Provide(provide_principal),
            "folds": Provide(_provide_folds, sync_to_thread=False),
        },
        tags=["sandbox"],
    )


def sandbox_state() -> dict[str, Any]:
    """What the sandbox keeps in the app's state."""
    return {"sandbox_folds": ConflictFolds()}


def _provide_folds(state: State) -> ConflictFolds:
    """The ``folds`` dependency: the folds the sandbox keeps (``sandbox_state``)."""
    folds: ConflictFolds = state.sandbox_folds
    return folds

"""The refresh grace rule of docs/protocol.md section 6, row by row, against a real gateway.

T0 is a refresh token; presenting it gives the pair P1 = (A1, R1), presenting R1 gives
P2 = (A2, R2). "Same pair" means the same bytes of both tokens: the whole answer body
is compared. Window W is 30 s on the session's gateway and 3 s on ``short`` (for the
rows that need it to pass).

| presented | when | answer |
| --- | --- | --- |
| T0 again | within W of T0's rotation, R1 unspent | P1 again, nothing revoked |
| T0 again, many times | within W | P1 every time; the window is not extended |
| T0 twice at once | | P1 to both |
| T0 again | R1 already refreshed | 401 refresh_reused, session revoked |
| R1 again | within W of R1's rotation, R2 unspent | P2 again (the grace moved on) |
| R1 by a second holder | after W of R1's rotation | 401 refresh_reused, session revoked |
| T0 again | after W, R1 unspent | 401 refresh_reused, session revoked |
| T0 again | within W, R1 issued before the upgrade | 401 unauthenticated, nothing revoked |
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from core.settings import Settings
from tests.e2e.conftest import Api, Session, StartGateway

WINDOW = 3.0


@pytest.fixture(scope="module")
def short(start_gateway: StartGateway) -> Iterator[Api]:
    client = Api(start_gateway({"refresh_grace_seconds": WINDOW}).base_url)
    yield client
    client.close()


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def _works(api: Api, access_token: str) -> bool:
    r = api.http.get("/v1/spaces", headers={"Authorization": f"Bearer {access_token}"})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def _assert_session_revoked(api: Api, pair: dict[str, Any]) -> None:
    assert not _works(api, pair["access_token"])
    assert _code(api.refresh(pair["refresh_token"])) == "unauthenticated"


def test_a_replay_within_the_window_answers_the_very_same_pair(api: Api) -> None:
    user = api.register()
    first = api.refresh(user.refresh_token)
    p1 = _ok(first)
    again = api.refresh(user.refresh_token)  # the first answer was lost
    assert again.status_code == 200
    assert again.content == first.content  # the same bytes: both tokens, expiry, ids
    assert p1["refresh_token"] != user.refresh_token
    # Nothing was revoked: the pair works, and R1 rotates as usual.
    assert _works(api, p1["access_token"])
    p2 = _ok(api.refresh(p1["refresh_token"]))
    assert p2["refresh_token"] != p1["refresh_token"]
    assert _works(api, p2["access_token"])


def test_replays_all_get_the_pair_and_do_not_extend_the_window(short: Api) -> None:
    user = short.register()
    first = short.refresh(user.refresh_token)
    assert first.status_code == 200
    for _ in range(3):
        assert short.refresh(user.refresh_token).content == first.content
    time.sleep(WINDOW * 0.6)
    assert short.refresh(user.refresh_token).content == first.content
    time.sleep(WINDOW * 0.6)  # past W from the rotation, not from the last replay
    late = short.refresh(user.refresh_token)
    assert late.status_code == 401
    assert _code(late) == "refresh_reused"
    _assert_session_revoked(short, first.json())


def test_two_presentations_at_once_get_the_same_pair(api: Api) -> None:
    user = api.register()

    def present(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(api.http.base_url), timeout=30) as http:
            return http.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(present, range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.content for a in answers}) == 1
    assert _works(api, answers[0].json()["access_token"])


def test_once_the_new_token_is_refreshed_the_spent_one_is_reuse(api: Api) -> None:
    user = api.register()
    p1 = _ok(api.refresh(user.refresh_token))
    p2 = _ok(api.refresh(p1["refresh_token"]))
    stolen = api.refresh(user.refresh_token)  # within W of T0's rotation, but R1 is spent
    assert stolen.status_code == 401
    assert _code(stolen) == "refresh_reused"
    _assert_session_revoked(api, p2)


def test_the_grace_moves_on_to_the_latest_rotation(api: Api) -> None:
    user = api.register()
    p1 = _ok(api.refresh(user.refresh_token))
    second = api.refresh(p1["refresh_token"])
    p2 = _ok(second)
    again = api.refresh(p1["refresh_token"])  # R1's answer was lost: P2 again
    assert again.content == second.content
    assert _works(api, p2["access_token"])
    assert _code(api.refresh(user.refresh_token)) == "refresh_reused"
    _assert_session_revoked(api, p2)


def test_two_holders_the_first_rotates_the_other_is_reuse_after_the_window(short: Api) -> None:
    user = short.register()
    holder_a = _ok(short.refresh(user.refresh_token))
    holder_b = _ok(short.refresh(user.refresh_token))
    assert holder_a == holder_b  # both hold P1
    rotated = short.refresh(holder_a["refresh_token"])  # A refreshes first: P2
    p2 = _ok(rotated)
    # B within W of that rotation: the same P2 (a lost answer looks exactly like this).
    assert short.refresh(holder_b["refresh_token"]).content == rotated.content
    time.sleep(WINDOW + 0.5)
    late = short.refresh(holder_b["refresh_token"])
    assert late.status_code == 401
    assert _code(late) == "refresh_reused"
    _assert_session_revoked(short, p2)


def test_after_the_window_a_replay_is_reuse(short: Api) -> None:
    user = short.register()
    p1 = _ok(short.refresh(user.refresh_token))
    time.sleep(WINDOW + 0.5)
    late = short.refresh(user.refresh_token)
    assert late.status_code == 401
    assert _code(late) == "refresh_reused"
    _assert_session_revoked(short, p1)


def test_a_replay_whose_pair_predates_the_upgrade_is_refused_without_revoking(
    api: Api, settings: Settings
) -> None:
    """Tokens issued before migration 0007 have no recorded access-token times, so their
    pair cannot be made again; a new pair would hand the session to whoever asked."""
    user: Session = api.register()
    p1 = _ok(api.refresh(user.refresh_token))
    generation = jwt.decode(p1["access_token"], options={"verify_signature": False})["gen"]

    async def forget_times() -> None:
        assert settings.database_url is not None
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(
                "UPDATE refresh_tokens SET access_iat = NULL, access_exp = NULL"
                " WHERE token_id = $1::uuid",
                generation,
            )
        finally:
            await conn.close()

    asyncio.run(forget_times())
    retry = api.refresh(user.refresh_token)
    assert retry.status_code == 401
    assert _code(retry) == "unauthenticated"
    assert _works(api, p1["access_token"])  # nothing revoked
    assert _ok(api.refresh(p1["refresh_token"]))["user_id"] == user.user_id

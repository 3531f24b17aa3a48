"""Access tokens (JWT HS256) and refresh token digests."""

from __future__ import annotations

import jwt
import pytest

from core.errors import Unauthenticated
from gateway.tokens import (
    AccessTokens,
    iso_utc,
    new_refresh_token,
    plausible_refresh_token,
    refresh_digest,
)

KEY = "k" * 48


def _issue(tokens: AccessTokens, now: float = 1_000_000.0) -> str:
    token, exp = tokens.issue(user_id="u", device_id="d", session_id="s", generation="g", now=now)
    assert exp == int(now) + tokens.ttl
    return token


def test_round_trip_and_expiry_is_reported_not_raised() -> None:
    tokens = AccessTokens(KEY, 900)
    token = _issue(tokens)
    claims = tokens.verify(token, now=1_000_100.0)
    assert (claims.user_id, claims.device_id, claims.session_id, claims.generation) == (
        "u", "d", "s", "g",
    )  # fmt: skip
    assert claims.expired is False
    assert claims.expires_at == 1_000_900
    assert tokens.verify(token, now=1_000_900.0).expired is True


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x" * 5000,
        "not.a.jwt",
        jwt.encode({"sub": "u", "exp": 2_000_000_000}, "other" * 10, algorithm="HS256"),
        jwt.encode({"typ": "other", "sub": "u", "device": "d", "session": "s", "gen": "g",
                    "iat": 1, "exp": 2_000_000_000}, KEY, algorithm="HS256"),
        jwt.encode({"typ": "concord.access", "sub": "u", "exp": 2_000_000_000}, KEY, "HS256"),
    ],
)  # fmt: skip
def test_foreign_or_malformed_tokens_are_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated):
        AccessTokens(KEY, 900).verify(token, now=1_000_000.0)


def test_a_tampered_token_is_refused() -> None:
    tokens = AccessTokens(KEY, 900)
    head, body, sig = _issue(tokens).split(".")
    forged = ".".join([head, body, sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")])
    with pytest.raises(Unauthenticated):
        tokens.verify(forged, now=1_000_000.0)


def test_refresh_tokens_are_random_and_stored_as_digests() -> None:
    token, digest = new_refresh_token()
    other, _ = new_refresh_token()
    assert token != other
    assert len(token) == 43
    assert digest == refresh_digest(token)
    assert len(digest) == 32
    assert plausible_refresh_token(token)
    assert not plausible_refresh_token("")
    assert not plausible_refresh_token("x" * 500)


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00Z"

"""Access tokens (JWT HS256), refresh tokens (HMACs of their id) and their digests."""

from __future__ import annotations

import jwt
import pytest

from core.errors import Unauthenticated
from gateway.tokens import (
    AccessTokens,
    RefreshTokens,
    iso_utc,
    plausible_refresh_token,
    refresh_digest,
)

KEY = b"k" * 32


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
        jwt.encode({"typ": "concord.access", "sub": "u", "device": "d", "session": "s",
                    "gen": "g", "iat": 1, "exp": 2_000_000_000}, b"o" * 32, algorithm="HS256"),
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


def test_the_same_claims_sign_to_the_same_bytes() -> None:
    tokens = AccessTokens(KEY, 900)
    token, exp = tokens.issue(user_id="u", device_id="d", session_id="s", generation="g", now=7.9)
    again = tokens.sign(
        user_id="u", device_id="d", session_id="s", generation="g", issued_at=7, expires_at=exp
    )
    assert again == token
    other = tokens.sign(
        user_id="u", device_id="d", session_id="s", generation="g", issued_at=8, expires_at=exp
    )
    assert other != token


def test_a_token_of_the_legacy_key_is_only_ever_expired() -> None:
    legacy = b"the root secret, as used before keys were separated"
    before = AccessTokens(legacy, 900)
    token = _issue(before)
    after = AccessTokens(KEY, 900, legacy_key=legacy)
    claims = after.verify(token, now=1_000_000.0)  # unexpired by its own exp
    assert claims.expired is True
    assert claims.session_id == "s"
    with pytest.raises(Unauthenticated):
        AccessTokens(KEY, 900).verify(token, now=1_000_000.0)


def test_refresh_tokens_are_hmacs_of_their_id_and_stored_as_digests() -> None:
    tokens = RefreshTokens(b"r" * 32)
    token = tokens.token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01")
    assert token == tokens.token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01")
    assert token != tokens.token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c02")
    assert token != RefreshTokens(b"q" * 32).token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01")
    assert len(token) == 43
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    digest = refresh_digest(token)
    assert len(digest) == 32
    assert digest != refresh_digest(token[:-1])
    assert plausible_refresh_token(token)
    assert not plausible_refresh_token("")
    assert not plausible_refresh_token("x" * 500)


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
